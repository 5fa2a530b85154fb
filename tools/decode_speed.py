"""Batch-1 decoding speed, the harness behind `make bench`'s decode section and its tests;
`python -m tools.decode_speed --profile train --path compiled --ops` for one figure and
where its time goes."""

from __future__ import annotations

import contextlib
import copy
import statistics
import time

import torch

from bytechat.serve.generate import SamplingConfig, generate_bytes
from bytechat.model import GPT
from bytechat.model.compiled import DecodeStep
from bytechat.core.rng import make_generator
from tools.bench.common import torch_threads


def decode_speed(
    model: GPT,
    context: int = 256,
    n: int = 128,
    use_cache: bool = True,
    threads: int | None = 1,
    compiled: bool | None = None,
    repeats: int = 1,
    trace: contextlib.AbstractContextManager | None = None,
) -> float:
    """Bytes per second of batch-1 decoding with the default sampling, prefill excluded
    (the median of `repeats` timed replies).

    The prompt is sized so that the context grows to min(context, block_size) bytes by
    the last of the n timed bytes (without a cache, every byte recomputes that window).
    Runs on a copy of the model set up as ChatEngine runs it, with `threads` intra-op
    threads (None: leave torch's setting alone); the thread count is restored after.
    compiled: through the decode step of bytechat/model/compiled.py, compiled (True,
    before the clock starts) or eager on its static cache (False); None: GPT.forward on
    a growing cache, as ChatEngine decodes without compiling. trace (a torch.profiler
    profile, say) is entered around the timed replies only, after any compiling.
    """
    block = model.config.block_size
    prompt_len = max(1, min(context, block) - n)
    prompt = bytes(32 + (i * 37) % 95 for i in range(prompt_len))  # printable ASCII
    model = copy.deepcopy(model).eval().use_decode_layout()
    with torch_threads(threads):
        sampling = SamplingConfig(max_new_bytes=n + 1)
        step = DecodeStep(model, compile=compiled) if compiled is not None else None
        if step is not None:  # compile outside the timed part (one short run)
            for _ in generate_bytes(model, prompt, SamplingConfig(max_new_bytes=2), make_generator(0), step=step):
                pass
        rates = []
        with trace or contextlib.nullcontext():
            for _ in range(repeats):
                gen = generate_bytes(model, prompt, sampling, make_generator(0), use_cache=use_cache, step=step)
                next(gen)  # prefill and the first byte: not part of the per-byte rate
                start = time.perf_counter()
                count = sum(1 for _ in gen)
                rates.append(count / (time.perf_counter() - start))
        return statistics.median(rates)


def profile_table(model: GPT, context: int = 256, n: int = 64, compiled: bool | None = None, top: int = 15) -> str:
    """torch.profiler's top ops (by self CPU time) while decoding n bytes at batch 1, one
    thread, compiling left out: where a decoded byte's time goes (docs/performance.md)."""
    from torch.profiler import ProfilerActivity, profile

    prof = profile(activities=[ProfilerActivity.CPU])
    decode_speed(model, context, n, True, 1, compiled, trace=prof)
    return prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=top)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from bytechat.core.config import load_params

    p = argparse.ArgumentParser(prog="python -m tools.decode_speed", description=__doc__)
    p.add_argument(
        "--profile", default="smoke", help="params.yaml profile whose model shape to decode (random weights)"
    )
    p.add_argument("--path", choices=["eager", "static", "compiled"], default="compiled")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bytes", type=int, default=128)
    p.add_argument("--ops", action="store_true", help="also print torch.profiler's top ops")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    model = GPT(load_params().profile(args.profile).model)
    compiled = {"eager": None, "static": False, "compiled": True}[args.path]
    bps = decode_speed(model, n=args.bytes, threads=args.threads, compiled=compiled, repeats=3)
    print(f"{args.profile} model, {args.path}, {args.threads} thread(s): {bps:,.0f} bytes/s")
    if args.ops:
        print(profile_table(model, n=args.bytes, compiled=compiled))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

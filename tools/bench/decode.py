"""Section `decode`: batch-1 bytes/s of the smoke and train profiles' models, eager and
through the compiled decode step (bytechat/model/compiled.py), on one and two threads,
against the arithmetic limit (FLOPs per decoded byte over the measured fp32 matmul peak);
KV cache against full recomputation; the time to first byte for a 1 KB prompt (a full
512-byte prefill). tools/decode_speed.py measures; docs/performance.md reads the figures."""

from __future__ import annotations

import copy
from dataclasses import asdict

import torch
from tqdm.auto import tqdm

from tools.bench.common import Context, fmt, median_time, table, torch_threads

TARGET_KV_RATIO = 6.0  # KV-cache decoding over full recomputation (train profile)
TARGET_KV_BPS = 300.0  # KV-cache decoding bytes/s at batch 1, eager (train profile)
# Compiled, one stream, one thread (issue 26): bytes/s per profile, time to first byte.
TARGET_COMPILED_BPS = {"smoke": 3000.0, "train": 1000.0}
TARGET_TTFB_MS = 40.0
CONTEXT = 256
PROFILES = ("smoke", "train")
THREADS = (1, 2)


def flops_per_decoded_byte(model, context: int) -> float:
    """The arithmetic one new byte needs at `context` bytes: every weight once (2 FLOPs per
    parameter: the tied output layer's matmul counts, the embedding lookup is free), the
    attention's q.k and weighted sum over the context's keys, and the copy head's q.k."""
    cfg = model.config
    return 2 * model.num_params() + 4 * cfg.n_layer * cfg.n_embd * context + 2 * cfg.copy_dim * context


def run(ctx: Context) -> dict:
    from bytechat.core.rng import make_generator
    from bytechat.model import GPT
    from bytechat.model.compiled import DecodeStep
    from bytechat.serve.generate import SamplingConfig, generate_bytes
    from tools.decode_speed import decode_speed

    plan, device = ctx.plan, ctx.device
    peak = (ctx.result("peak") or {}).get("fp32_gflops")
    threads = THREADS if device.type == "cpu" else (None,)
    out: dict = {"context": CONTEXT, "bytes_timed": plan.decode_bytes, "compiled": plan.compile, "paths": []}
    models = {}
    bar = tqdm(total=len(PROFILES) * len(threads) * 2 + 2, desc="decode", leave=False)
    for name in PROFILES:
        cfg = ctx.params.profile(name).model
        torch.manual_seed(ctx.seed)
        models[name] = model = GPT(cfg).to(device).eval()
        context = min(CONTEXT, cfg.block_size)
        flops = flops_per_decoded_byte(model, context)
        limit = peak * 1e9 / flops if peak else None
        for n_threads in threads:
            for path, compiled in (("eager", None), ("compiled", plan.compile)):
                bps = decode_speed(model, context, plan.decode_bytes, True, n_threads, compiled, plan.decode_repeats)
                bar.update()
                row = {"profile": name, "path": path, "threads": n_threads, "bytes_per_s": round(bps, 1)}
                row |= {"limit_bytes_per_s": limit and round(limit), "share_of_limit": limit and round(bps / limit, 4)}
                out["paths"].append(row)
        out[name] = {"model": asdict(cfg), "flops_per_byte": round(flops), "limit_bytes_per_s": limit and round(limit)}

    # The train profile: the KV cache against recomputing the window for every byte.
    model, one = models["train"], threads[0]
    kv = decode_speed(model, CONTEXT, plan.decode_bytes, True, one, None, plan.decode_repeats)
    full = decode_speed(model, CONTEXT, plan.decode_bytes, False, one, None, plan.decode_repeats)
    bar.update()

    # Time to first byte: a 1 KB prompt (generate_bytes keeps its last block_size bytes),
    # prefill + the first sample, on a copy set up as ChatEngine sets it up, eager and on
    # the compiled step's static cache (its prefill runs eager over that cache).
    chat_model = copy.deepcopy(model).eval()
    if device.type == "cpu":
        chat_model.use_decode_layout()
    step = DecodeStep(chat_model, compile=plan.compile)
    prompt = bytes(32 + (i * 37) % 95 for i in range(1024))
    sampling = SamplingConfig(max_new_tokens=1)
    ttfb = {}
    with torch_threads(one):
        for path, with_step in (("eager", None), ("compiled", step)):
            ttfb[path] = median_time(
                lambda with_step=with_step: next(
                    generate_bytes(chat_model, prompt, sampling, make_generator(0), step=with_step)
                ),
                plan.ttfb_repeats,
                device,
            )
    bar.update()
    bar.close()

    def rate(name: str, path: str) -> float:
        return next(r["bytes_per_s"] for r in out["paths"] if r["profile"] == name and r["path"] == path)

    out |= {
        "threads": one,
        "kv_bytes_per_s": round(kv, 1),
        "full_bytes_per_s": round(full, 1),
        "kv_over_full": round(kv / full, 2),
        "ttfb_ms": round(ttfb["eager"] * 1e3, 2),
        "ttfb_compiled_ms": round(ttfb["compiled"] * 1e3, 2),
        "ttfb_prompt_bytes": len(prompt),
        "ttfb_prefill_bytes": min(len(prompt), model.config.block_size),
        "compiled_over_eager": {name: round(rate(name, "compiled") / rate(name, "eager"), 2) for name in PROFILES},
    }
    targets = ", ".join(f"{name} >= {TARGET_COMPILED_BPS[name]:,.0f}" for name in PROFILES)
    out["target"] = (
        f"eager KV cache >= {TARGET_KV_RATIO:g}x full recomputation and >= {TARGET_KV_BPS:g} bytes/s (train);"
        f" compiled, one thread: {targets} bytes/s, time to first byte <= {TARGET_TTFB_MS:g} ms (train)"
    )
    out["met"] = bool(
        kv / full >= TARGET_KV_RATIO
        and kv >= TARGET_KV_BPS
        and all(rate(name, "compiled") >= TARGET_COMPILED_BPS[name] for name in PROFILES)
        and ttfb["compiled"] * 1e3 <= TARGET_TTFB_MS
    )
    return out


def lines(s: dict) -> list[str]:
    rows = [
        [
            r["profile"],
            r["path"] if s.get("compiled", True) or r["path"] == "eager" else "static cache, eager",
            fmt(r["threads"]),
            fmt(r["bytes_per_s"], ",.0f"),
            fmt(r["limit_bytes_per_s"], ",.0f"),
            fmt(r["share_of_limit"] and 100 * r["share_of_limit"], ".2f") + "%",
        ]
        for r in s["paths"]
    ]
    return (
        table(["model", "decode step", "threads", "bytes/s", "arithmetic limit, bytes/s", "share"], rows)
        + [""]
        + table(
            ["measure (train profile)", "value"],
            [
                ["KV cache, bytes/s (eager)", fmt(s["kv_bytes_per_s"], ".1f")],
                ["full recomputation, bytes/s", fmt(s["full_bytes_per_s"], ".1f")],
                ["KV / full", f"{s['kv_over_full']:.1f}x"],
                [
                    f"time to first byte, {s['ttfb_prompt_bytes']} B prompt ({s['ttfb_prefill_bytes']} B prefill), eager / compiled",
                    f"{s['ttfb_ms']:.1f} / {s['ttfb_compiled_ms']:.1f} ms",
                ],
                [
                    "compiled over eager, smoke / train",
                    " / ".join(f"{v:.2f}x" for v in s["compiled_over_eager"].values()),
                ],
                ["context", f"{s['context']} bytes"],
            ],
        )
    )

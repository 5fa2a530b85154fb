"""Batch-1 decoding speed, the harness behind `make bench`'s decode section and its tests."""

from __future__ import annotations

import copy
import time

import torch

from bytechat.serve.generate import SamplingConfig, generate_bytes
from bytechat.model import GPT
from bytechat.model.compiled import DecodeStep
from bytechat.core.rng import make_generator


def decode_speed(
    model: GPT,
    context: int = 256,
    n: int = 128,
    use_cache: bool = True,
    threads: int | None = 1,
    compiled: bool = False,
) -> float:
    """Bytes per second of batch-1 decoding with the default sampling, prefill excluded.

    The prompt is sized so that the context grows to min(context, block_size) bytes by
    the last of the n timed bytes (without a cache, every byte recomputes that window).
    Runs on a copy of the model set up as ChatEngine runs it, with `threads` intra-op
    threads (None: leave torch's setting alone); the thread count is restored after.
    compiled: through the compiled decode step (bytechat/model/compiled.py), compiled
    before the clock starts.
    """
    block = model.config.block_size
    prompt_len = max(1, min(context, block) - n)
    prompt = bytes(32 + (i * 37) % 95 for i in range(prompt_len))  # printable ASCII
    model = copy.deepcopy(model).eval().use_decode_layout()
    previous_threads = torch.get_num_threads()
    try:
        if threads is not None:
            torch.set_num_threads(threads)
        sampling = SamplingConfig(max_new_bytes=n + 1)
        step = DecodeStep(model) if compiled else None
        if step is not None:  # compile outside the timed part (one short run)
            for _ in generate_bytes(model, prompt, SamplingConfig(max_new_bytes=2), make_generator(0), step=step):
                pass
        gen = generate_bytes(model, prompt, sampling, make_generator(0), use_cache=use_cache, step=step)
        next(gen)  # prefill and the first byte: not part of the per-byte rate
        start = time.perf_counter()
        count = sum(1 for _ in gen)
        return count / (time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous_threads)

"""A compiled decode step: GPT.forward for one new byte per row, through torch.compile.

Batch-1 decoding of a small model is almost all per-op overhead (dispatch, Python, tiny
kernels), which inductor fuses away. The step runs on a `static` KVCache (every step
attends over all block_size positions, masked), so its shapes never change and it
compiles once per batch size. Where compiling fails (no C++ compiler, an unsupported
platform) the step says so in one line and runs eager: same numbers, slower.
"""

from __future__ import annotations

import sys

import torch

from bytechat.model.cache import KVCache
from bytechat.model.gpt import GPT


class DecodeStep:
    """step(idx (B, 1), cache) -> next-byte log-probabilities (B, 256), for caches made
    by new_cache(). compile=False is the same static-shape step, eager."""

    def __init__(self, model: GPT, compile: bool = True) -> None:
        self.model = model
        self.compiled = compile
        self._step = torch.compile(self._forward, dynamic=False) if compile else self._forward

    def _forward(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return self.model(idx, cache=cache)[0][:, -1]

    def new_cache(self, batch_size: int = 1) -> KVCache:
        cache = self.model.new_cache(batch_size)
        cache.static = True
        return cache

    def __call__(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        if not cache.static:
            raise ValueError("DecodeStep: the cache must come from DecodeStep.new_cache (static shapes)")
        if int(cache.lengths.max()) >= cache.capacity:  # a static step checks no bounds itself
            raise ValueError(f"DecodeStep: the cache is full (block_size {cache.capacity}); refill it first")
        if self.compiled:
            try:
                return self._step(idx, cache)
            except Exception as exc:  # the compiler is missing or refuses: decode eager
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                print(
                    f"bytechat: compiling the decode step failed ({type(exc).__name__}: {first}); decoding eager",
                    file=sys.stderr,
                )
                self.compiled, self._step = False, self._forward
        return self._step(idx, cache)

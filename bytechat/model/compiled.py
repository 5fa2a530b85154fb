"""A compiled decode step: GPT.forward for one new byte per row, through torch.compile.

Batch-1 decoding of a small model is almost all per-op overhead (dispatch, Python, tiny
kernels), which inductor fuses away. The step runs on a `static` KVCache (every step
attends over all block_size positions, masked), so its shapes never change and it
compiles once per batch size; the batch engine pads its rows up to the next of BUCKETS,
so a server compiles at most five shapes. Compiled code is cached on disk (inductor's
cache, under artifacts/ unless TORCHINDUCTOR_CACHE_DIR says otherwise), so only the
first start pays the full compile. Where compiling fails (no C++ compiler, an
unsupported platform) the step says so in one line and runs eager: same numbers, slower.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Callable, Sequence

import torch
from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.model.cache import KVCache
from bytechat.model.gpt import GPT

BUCKETS = (1, 2, 4, 8, 16)  # batch sizes a step is compiled for (and the batch's largest)
CACHE_ENV = "TORCHINDUCTOR_CACHE_DIR"


def batch_sizes(max_batch: int) -> tuple[int, ...]:
    """The compiled batch sizes of a batch of at most max_batch rows: BUCKETS below it, and it."""
    if max_batch < 1:
        raise ValueError(f"batch_sizes: max_batch must be >= 1 (got {max_batch})")
    return tuple(b for b in BUCKETS if b < max_batch) + (max_batch,)


def bucket(n: int, sizes: Sequence[int]) -> int:
    """The smallest of sizes (ascending) that holds n rows."""
    for size in sizes:
        if size >= n:
            return size
    raise ValueError(f"bucket: {n} rows exceed the largest compiled batch size {sizes[-1]}")


def use_artifacts_cache() -> str:
    """Inductor's on-disk cache under artifacts/ (unless the environment names one); its path."""
    try:  # importing inductor writes its default (under /tmp) into the environment
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir

        default = default_cache_dir()
    except ImportError:  # another torch layout: only an unset variable is ours to set
        default = None
    if os.environ.get(CACHE_ENV) in (None, default):
        os.environ[CACHE_ENV] = str(paths.artifacts() / "inductor-cache")
    return os.environ[CACHE_ENV]


class DecodeStep:
    """step(idx (B, 1), cache) -> next-byte log-probabilities (B, 256), for caches made
    by new_cache() (or views of them with .static set). compile=False is the same
    static-shape step, eager."""

    def __init__(self, model: GPT, compile: bool = True) -> None:
        self.model = model
        self.compiled = compile
        if compile:
            use_artifacts_cache()
        self._step = torch.compile(self._forward, dynamic=False) if compile else self._forward

    def _forward(self, idx: torch.Tensor, cache: KVCache) -> torch.Tensor:
        return self.model(idx, cache=cache)[0][:, -1]

    def new_cache(self, batch_size: int = 1) -> KVCache:
        cache = self.model.new_cache(batch_size)
        cache.static = True
        return cache

    @torch.inference_mode()
    def warm_up(
        self, sizes: Sequence[int] = (1,), run: Callable[[int], object] | None = None, progress: bool = True
    ) -> float:
        """Compile now, for each batch size in sizes, rather than at the first reply;
        the seconds it took (0 when eager; stops early if compiling fails). run(size)
        takes one step of that size on the tensors decoding will use (the batch engine's
        own cache: a fresh cache's tensors, made in inference mode, would not pass the
        compiled code's guards there); default: a step on a fresh cache, as
        generate_bytes decodes."""
        if not self.compiled:
            return 0.0
        device = self.model.wte.weight.device
        run = run or (lambda size: self(torch.zeros((size, 1), dtype=torch.long, device=device), self.new_cache(size)))
        start = time.perf_counter()
        for size in tqdm(sizes, desc="compiling the decode step", unit="shape", disable=not progress, leave=False):
            run(size)
            if not self.compiled:
                break
        return time.perf_counter() - start

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


def start_line(step: DecodeStep | None, seconds: float, sizes: Sequence[int]) -> str:
    """The one start-up line of chat and serve: how they decode, and what compiling took."""
    if step is None:
        return "decoding eager (not compiled)"
    if not step.compiled:
        return "decoding eager (compiling failed, see above)"
    batch = ", ".join(str(b) for b in sizes)
    return f"decode step compiled in {seconds:.1f} s (batch {batch}; cache {os.environ[CACHE_ENV]})"

"""What every bench section shares: the plan (how much to measure), the context a section
runs in, timing helpers, a child process for what must be measured alone, and the
markdown table."""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import torch

from bytechat.core.config import Params
from bytechat.core.device import synchronize

MIB = 1 << 20


@dataclass(frozen=True)
class Plan:
    """How much to measure. FULL is `make bench` (a few minutes); QUICK is --quick."""

    peak_repeats: int = 30
    train_warmup: int = 3  # steps per path before timing
    train_steps: int = 15  # timed steps per path (median)
    decode_bytes: int = 64  # timed bytes per decode measurement
    decode_repeats: int = 5
    ttfb_repeats: int = 9
    batch_calls: int = 300
    batch_stream_mb: float = 4.0  # the wiki stream; roam a quarter, primer a sixteenth
    stream_mb: float = 200.0  # generated corpus for the streams stage (plus one a tenth as big)
    eval_kb: float = 200.0
    eval_fp32: bool = True  # also score in fp32 for the speedup of the auto dtype
    web_requests: int = 2000
    web_concurrency: int = 16
    serve_clients: tuple[int, ...] = (1, 4, 16)  # concurrent clients streaming replies, batched and not
    serve_requests_per_client: int = 8
    serve_max_new_tokens: int = 128
    notes_queries: int = 500  # search latency: questions on the example graph
    notes_pages: int = 10000  # synthetic notes folder to index (~2 KB a page), and a tenth of it
    compile: bool = True  # decode and serve through the compiled step too (False: its static cache, eager)


FULL = Plan()
QUICK = Plan(
    peak_repeats=5,
    train_warmup=1,
    train_steps=3,
    decode_bytes=16,
    decode_repeats=1,
    ttfb_repeats=3,
    batch_calls=50,
    batch_stream_mb=1.0,
    stream_mb=20.0,
    eval_kb=20.0,
    eval_fp32=False,
    web_requests=100,
    web_concurrency=8,
    serve_requests_per_client=2,
    notes_queries=200,
    notes_pages=2000,
)


@dataclass
class Context:
    """What a section's run(ctx) gets: the plan, the device, params.yaml, the seed, the
    serve section's model, and the report so far (train reads peak, batching reads train)."""

    plan: Plan
    device: torch.device
    params: Params
    seed: int = 0
    serve_ckpt: str | None = None
    report: dict = field(default_factory=dict)

    def result(self, name: str) -> dict | None:
        """An earlier section's result, if it ran and did not fail."""
        section = self.report.get(name)
        return section if isinstance(section, dict) and "error" not in section else None


def median_time(fn: Callable[[], object], repeats: int, device: torch.device | None = None) -> float:
    """Median wall seconds of fn() over repeats calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        if device is not None:
            synchronize(device)
        start = time.perf_counter()
        fn()
        if device is not None:
            synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


def decode_threads() -> int:
    """The chat's decoding thread count (BYTECHAT_THREADS, default 1)."""
    raw = os.environ.get("BYTECHAT_THREADS", "1")
    try:
        return max(1, int(raw))
    except ValueError:
        return 1


def repo_env() -> dict:
    """This environment with the repository root on PYTHONPATH (for `bytechat` and `tools`)."""
    root = str(Path(__file__).resolve().parents[2])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


# A child's own memory: VmHWM (peak RSS) starts afresh at exec, where a child's ru_maxrss
# on Linux starts from the forking parent's RSS.
RSS_KIB = """
def rss_kib(field):  # this process's VmRSS / VmHWM (peak) in KiB
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])
"""


def run_child(script: str, args: Sequence[str], what: str, timeout: float) -> dict:
    """Run `script` (Python source, with rss_kib defined) in a fresh interpreter; it prints
    one JSON object as its last line, which is returned."""
    proc = subprocess.run(
        [sys.executable, "-c", RSS_KIB + script, *map(str, args)],
        capture_output=True,
        text=True,
        env=repo_env(),
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- markdown


def fmt(value, spec: str = "") -> str:
    if value is None:
        return "n/a"
    return format(value, spec) if spec else str(value)


def table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines

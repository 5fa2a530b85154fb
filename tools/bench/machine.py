"""The machine a bench ran on (CPU, threads, torch), and how busy other processes kept it:
on a shared machine, how much the figures were disturbed (from /proc/stat)."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from pathlib import Path

import torch

from bytechat.core.device import cpu_has_bf16
from tools.bench.common import decode_threads


def _proc_stat() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - fields[3] - fields[4]) / tick, total / tick  # idle and iowait are not busy


def _own_cpu_seconds() -> float:
    t = os.times()  # this process and its waited-for children (the streams and web subprocesses)
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """The share of the machine's CPU time used by other processes (not this one or its
    children) since start(): on a shared machine, how much the figures were disturbed."""

    def __init__(self) -> None:
        try:
            self.busy, self.total = _proc_stat()
        except (OSError, ValueError, IndexError):
            self.busy = self.total = None
        self.own = _own_cpu_seconds()

    def percent(self) -> float | None:
        if self.busy is None:
            return None
        busy, total = _proc_stat()
        others = (busy - self.busy) - (_own_cpu_seconds() - self.own)
        return round(100.0 * max(0.0, others) / max(1e-9, total - self.total), 1)


def cpu_busy_percent(seconds: float = 1.0) -> float | None:
    """How busy the CPUs are over `seconds` (sampled before the run, while this process sleeps)."""
    load = OtherLoad()
    time.sleep(seconds)
    return load.percent()


def machine_info(threads: int, device: torch.device) -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "device": str(device),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_bf16(),
        "threads": threads,
        "decode_threads": decode_threads(),
        "python": platform.python_version(),
    }

"""How a training run reports: the progress bar and messages on stderr, dvclive metrics
and params under artifacts/runs/<profile>/live/ (rank 0 only), and its speed.

MFU (model FLOPs utilisation) = model.flops_per_byte() x bytes/s / peak FLOP/s, where the
peak is measured once at start as the rate of a 1024^3 matmul in the training dtype (so
it is "share of what this machine's matmul reaches", not of a spec sheet), unless
BYTECHAT_PEAK_FLOPS gives it (e.g. 989e12 for an H100's bf16 spec).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Iterator, Mapping

import torch
from tqdm.auto import tqdm

from bytechat.model import checkpoint as ckpt_io
from bytechat.core.atomic import write_text
from bytechat.core.config import ConfigError
from bytechat.core.device import synchronize
from bytechat.core.rng import make_generator

PEAK_ENV = "BYTECHAT_PEAK_FLOPS"


class RunLogger:
    """The run's voice. Messages, the bar and dvclive belong to rank 0 (the other ranks
    stay silent); quiet silences all but warnings. dvclive and the bar exist only inside
    `running()`; metrics logged outside it go nowhere."""

    def __init__(self, name: str, total_steps: int, live_dir: Path, *, main: bool, quiet: bool) -> None:
        self.name, self.total_steps, self.live_dir = name, total_steps, live_dir
        self.main, self.quiet = main, quiet
        self.live = None  # dvclive.Live while running, on rank 0
        self.bar: tqdm | None = None

    def say(self, message: str) -> None:
        if self.main and not self.quiet:
            tqdm.write(message, file=sys.stderr)

    def shout(self, message: str) -> None:
        """A warning nobody should miss (printed even when quiet)."""
        if self.main:
            tqdm.write(f"!!! warning: {message}", file=sys.stderr)

    @contextlib.contextmanager
    def running(self, step: int, resume: bool) -> Iterator["RunLogger"]:
        """Open dvclive (resuming its history at step) and the progress bar; the bar closes
        however the run ends, dvclive is ended only when it ends normally."""
        self.live = open_live(self.live_dir, resume, step) if self.main else None
        tty = sys.stderr.isatty()
        self.bar = tqdm(
            total=self.total_steps,
            initial=step,
            desc=f"train {self.name}",
            unit="step",
            dynamic_ncols=True,
            mininterval=0.5 if tty else 30,
            disable=self.quiet or not self.main,
        )
        try:
            yield self
        finally:
            self.bar.close()
        if self.live is not None:
            self.live.end()

    def step_done(self) -> None:
        self.bar.update(1)

    def phase(self, message: str, params: Mapping[str, object]) -> None:
        """Say which mix the steps from here draw by; record it as dvclive params."""
        self.say(message)
        if self.live is not None:
            self.live.log_params(dict(params))

    def training(self, step: int, phase: str, loss: float, lr: float, bps: float, mfu: float, chat: bool) -> None:
        self.bar.set_postfix_str(
            f"{phase} loss {loss:.3f} lr {lr:.2e} {bps / 1e3:.1f} kB/s MFU {mfu:.1%}", refresh=False
        )
        metrics = {"train/loss": loss, "lr": lr, "bytes_per_s": bps, "mfu": mfu}
        self.metrics(step, {**metrics, "phase": float(chat)})  # 0 base, 1 chat

    def validation(
        self,
        step: int,
        val_loss: float,
        val_losses: Mapping[str, float],
        best: float,
        answers: float | None = None,
        best_answers: float | None = None,
    ) -> None:
        losses = " ".join(f"{s} {v:.3f}" for s, v in val_losses.items())
        probe = "" if answers is None else f" answers {answers:.3f}"
        best_probe = "" if best_answers is None else f" answers {best_answers:.3f}"
        self.say(f"step {step}: val {val_loss:.4f} ({losses}){probe} best {best:.4f}{best_probe}")
        metrics = {f"val/{s}/loss": v for s, v in val_losses.items()}
        if answers is not None:
            metrics["val/answers"] = answers
        self.metrics(step, {**metrics, "val/loss": val_loss})

    def metrics(self, step: int, metrics: Mapping[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = step
        for name, value in metrics.items():
            self.live.log_metric(name, float(value))

    def summary(self) -> None:
        """Write metrics.json now (dvc reads it; a killed run keeps the last one)."""
        if self.live is not None:
            self.live.make_summary()


# ---------------------------------------------------------------- dvclive


def trim_live_history(live_dir: Path, last_step: int) -> None:
    """Drop metric rows logged after last_step (by a run killed after its last checkpoint),
    so a resumed run's plots hold each step once; partial lines of a kill mid-write go too."""
    for tsv in (live_dir / "plots" / "metrics").rglob("*.tsv"):
        lines = tsv.read_text(encoding="utf-8").splitlines()
        if not lines:
            continue
        header = lines[0].split("\t")
        if "step" not in header:
            continue
        col = header.index("step")
        kept = [lines[0]]
        for line in lines[1:]:
            cells = line.split("\t")
            if len(cells) == len(header) and cells[col].isdigit() and int(cells[col]) <= last_step:
                kept.append(line)
        if len(kept) != len(lines):
            write_text(tsv, "\n".join(kept) + "\n")


def open_live(live_dir: Path, resume: bool, step: int):
    """A dvclive Live writing metrics.json and plots under live_dir (no dvc.yaml, no exp)."""
    from dvclive import Live  # imported late: it pulls in dvc, ~1 s

    metrics = live_dir / "metrics.json"
    if resume and metrics.exists():
        try:
            json.loads(metrics.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            ckpt_io.warn(f"{metrics}: damaged (killed mid-write?); rebuilt from the next log")
            metrics.unlink()
    if resume:
        trim_live_history(live_dir, step)
    live = Live(dir=str(live_dir), resume=resume, save_dvc_exp=False, dvcyaml=None)
    live.step = step
    return live


# ---------------------------------------------------------------- speed


class Speedometer:
    """Training bytes/s and MFU over the steps since the last restart()."""

    def __init__(self, bytes_per_step: int, flops_per_byte: float, peak_flops: float, device: torch.device) -> None:
        self.bytes_per_step, self.flops_per_byte, self.peak = bytes_per_step, flops_per_byte, peak_flops
        self.device = device
        self.restart()

    def restart(self) -> None:
        synchronize(self.device)
        self.start, self.steps = time.perf_counter(), 0

    def count_step(self) -> None:
        self.steps += 1

    def read(self) -> tuple[float, float]:
        """(bytes per second, model FLOPs utilisation)."""
        synchronize(self.device)
        bps = self.bytes_per_step * self.steps / max(time.perf_counter() - self.start, 1e-9)
        return bps, self.flops_per_byte * bps / self.peak


def measure_peak_flops(device: torch.device, dtype: torch.dtype | None, seconds: float = 0.3) -> float:
    """FLOP/s of a 1024^3 matmul in the training dtype, or BYTECHAT_PEAK_FLOPS when set."""
    env = os.environ.get(PEAK_ENV)
    if env:
        try:
            value = float(env)
            if value > 0 and math.isfinite(value):
                return value
        except ValueError:
            pass
        raise ConfigError(f"{PEAK_ENV}: expected a FLOP/s figure > 0 such as 1.5e11, got {env!r}")
    n = 1024
    gen = make_generator(0, "cpu")  # leaves the global RNG untouched
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype or torch.float32)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype or torch.float32)
    a @ b  # warm up kernels and caches
    synchronize(device)
    count, start = 0, time.perf_counter()
    while True:
        a @ b
        count += 1
        synchronize(device)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return 2 * n**3 * count / elapsed

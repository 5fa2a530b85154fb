"""Section `train`: training steps (forward + backward + clip + optimizer) of the
params.yaml profiles: the default fast path (what Trainer runs: bf16 autocast where the
CPU has native bf16, fused AdamW) against a plain fp32 reference of the same model, same
batch, steps interleaved; bytes/s and MFU (of the peak section's rate)."""

from __future__ import annotations

import statistics
import time
from dataclasses import asdict
from typing import Sequence

import torch
from tqdm.auto import tqdm

from bytechat.core.config import Profile
from bytechat.core.device import autocast_dtype, synchronize
from tools.bench import peak
from tools.bench.common import Context, Plan, dtype_name, fmt, table

TARGET_MFU = 0.50  # train profile, fast path, of the matmul peak of its dtype
TARGET_SPEEDUP = 1.5  # fast path over the fp32 reference, train profile
TARGET_LOSS_REL = 0.01  # |fast loss - fp32 loss| / fp32 loss on the same batch and weights


class StepRunner:
    """One training path of a profile: the model, its optimizer, and the Trainer's own
    step (bytechat.train.step.optimizer_step: lr, micro-steps under autocast, clip, AdamW)."""

    def __init__(self, profile: Profile, amp: torch.dtype | None, device: torch.device, seed: int) -> None:
        from bytechat.model import GPT
        from bytechat.train.step import build_optimizer

        self.mcfg, self.tcfg, self.amp, self.device = profile.model, profile.train, amp, device
        torch.manual_seed(seed)  # both paths start from the same weights
        self.model = GPT(self.mcfg).to(device).train()
        self.optimizer = build_optimizer(self.model, self.tcfg, device)
        self.step_no = 0

    def step(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
        from bytechat.train.step import optimizer_step

        assert len(batches) == self.tcfg.grad_accum, "one micro-batch per grad_accum step"
        loss = optimizer_step(
            self.model, self.model, self.optimizer, self.tcfg, self.step_no, batches, self.device, self.amp
        )
        self.step_no += 1
        return float(loss)


def bench_profile(profile: Profile, plan: Plan, device: torch.device, peaks: dict, seed: int) -> dict:
    mcfg, tcfg = profile.model, profile.train
    micro = tcfg.batch_size // tcfg.grad_accum
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(tcfg.grad_accum):
        data = torch.randint(0, 256, (micro, mcfg.block_size + 1), generator=gen)
        batches.append((data[:, :-1].contiguous().to(device), data[:, 1:].contiguous().to(device)))
    amp = autocast_dtype(device, tcfg.dtype)
    runners = {"fast": StepRunner(profile, amp, device, seed), "reference": StepRunner(profile, None, device, seed)}
    times: dict[str, list[float]] = {name: [] for name in runners}
    first_loss: dict[str, float] = {}
    order = list(runners)
    bar = tqdm(total=(plan.train_warmup + plan.train_steps) * 2, desc=f"train {profile.name}", unit="step", leave=False)
    for i in range(plan.train_warmup + plan.train_steps):
        for name in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
            synchronize(device)
            start = time.perf_counter()
            loss = runners[name].step(batches)
            synchronize(device)
            elapsed = time.perf_counter() - start
            if i == 0:
                first_loss[name] = loss  # same weights and batch for both paths
            if i >= plan.train_warmup:
                times[name].append(elapsed)
            bar.update(1)
    bar.close()
    bytes_per_step = tcfg.batch_size * mcfg.block_size
    flops_per_byte = float(runners["fast"].model.flops_per_byte())
    out: dict = {
        "model": asdict(mcfg),
        "batch_size": tcfg.batch_size,
        "grad_accum": tcfg.grad_accum,
        "flops_per_byte": flops_per_byte,
        "steps_timed": plan.train_steps,
    }
    for name, runner in runners.items():
        step_s = statistics.median(times[name])
        bps = bytes_per_step / step_s
        dtype = dtype_name(runner.amp)
        peak_gflops = peaks.get(f"{dtype}_gflops")
        out[name] = {
            "dtype": dtype,
            "step_ms": round(step_s * 1e3, 1),
            "bytes_per_s": round(bps, 1),
            "gflops": round(flops_per_byte * bps / 1e9, 1),
            "mfu": round(flops_per_byte * bps / (peak_gflops * 1e9), 4) if peak_gflops else None,
            "first_loss": round(first_loss[name], 5),
        }
    ref_loss = first_loss["reference"]
    out["speedup"] = round(out["reference"]["step_ms"] / out["fast"]["step_ms"], 3)
    out["loss_rel_diff"] = abs(first_loss["fast"] - ref_loss) / abs(ref_loss)
    return out


def run(ctx: Context) -> dict:
    peaks = ctx.result("peak") or peak.run(ctx)  # the peak section, or (skipped, failed) measured here
    results = {
        name: bench_profile(profile, ctx.plan, ctx.device, peaks, ctx.seed)
        for name, profile in ctx.params.profiles.items()
    }
    section: dict = {"profiles": results}
    main = results.get("train")
    section["target"] = (
        f"train profile: fast-path MFU >= {TARGET_MFU:.0%} of its dtype's peak, >= {TARGET_SPEEDUP}x the "
        f"fp32 reference, first-step loss within {TARGET_LOSS_REL:.0%} of fp32"
    )
    if main is None or main["fast"]["mfu"] is None:
        section["met"] = None
    else:
        section["met"] = bool(
            main["fast"]["mfu"] >= TARGET_MFU
            and main["speedup"] >= TARGET_SPEEDUP
            and main["loss_rel_diff"] <= TARGET_LOSS_REL
        )
    return section


def step_seconds(ctx: Context) -> float | None:
    """The train profile's fast-path step time from the train section, if it ran."""
    train = (ctx.result("train") or {}).get("profiles", {}).get("train")
    return train["fast"]["step_ms"] / 1e3 if train else None


def lines(s: dict) -> list[str]:
    rows = []
    for prof, r in s["profiles"].items():
        mc = r["model"]
        for path in ("fast", "reference"):
            p = r[path]
            rows.append(
                [
                    f"{prof} ({mc['n_layer']}x{mc['n_embd']}, T={mc['block_size']}, B={r['batch_size']})",
                    f"{path} ({p['dtype']})",
                    fmt(p["step_ms"], ".1f"),
                    fmt(p["bytes_per_s"], ",.0f"),
                    fmt(p["gflops"], ".1f"),
                    fmt(p["mfu"], ".1%"),
                    fmt(p["first_loss"], ".4f"),
                ]
            )
        rows.append(
            [f"{prof}", "fast / reference", f"{r['speedup']:.2f}x", "", "", "", f"rel. diff {r['loss_rel_diff']:.1e}"]
        )
    return table(["profile", "path", "step ms", "bytes/s", "GFLOP/s", "MFU", "first loss"], rows)

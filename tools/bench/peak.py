"""Section `peak`: the machine's matmul rate, fp32 and bf16, 1024^3 (median of repeats):
the reference the train section's MFU is a share of."""

from __future__ import annotations

import torch

from tools.bench.common import Context, fmt, median_time, table

N = 1024


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int, n: int = N) -> float:
    """Median GFLOP/s of an n^3 matmul (2 n^3 FLOPs), as run_log.measure_peak_flops defines the peak."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    return 2 * n**3 / median_time(lambda: a @ b, repeats, device) / 1e9


def run(ctx: Context) -> dict:
    repeats = ctx.plan.peak_repeats
    return {
        "fp32_gflops": round(matmul_gflops(ctx.device, torch.float32, repeats), 1),
        "bf16_gflops": round(matmul_gflops(ctx.device, torch.bfloat16, repeats), 1),
        "n": N,
        "repeats": repeats,
        "target": "none (the reference for MFU)",
        "met": None,
    }


def lines(s: dict) -> list[str]:
    return table(
        ["dtype", "GFLOP/s (1024^3 matmul, median)"],
        [["fp32", fmt(s["fp32_gflops"], ".1f")], ["bf16", fmt(s["bf16_gflops"], ".1f")]],
    )

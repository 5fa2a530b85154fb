"""Section `eval`: score_bytes throughput with the smoke model, in the auto dtype and
(unless the plan says not) in fp32."""

from __future__ import annotations

import time
from dataclasses import asdict

import numpy as np
import torch

from bytechat.core.device import autocast_dtype, synchronize
from tools.bench.common import Context, dtype_name, fmt, table


def run(ctx: Context) -> dict:
    from bytechat.eval.bpb import score_bytes
    from bytechat.model import GPT

    plan, device, profile = ctx.plan, ctx.device, ctx.params.profile("smoke")
    torch.manual_seed(ctx.seed)
    model = GPT(profile.model).to(device).eval()
    rng = np.random.default_rng(ctx.seed)
    data = rng.integers(32, 127, int(plan.eval_kb * 1024), dtype=np.uint8)
    amp = autocast_dtype(device, "auto")
    score_bytes(model, data[: 4 * profile.model.block_size], device=device, dtype=amp, progress=False)  # warm-up
    out: dict = {"model": asdict(profile.model), "bytes": len(data)}
    dtypes = [("auto", amp)] + ([("fp32", None)] if plan.eval_fp32 and amp is not None else [])
    for label, dtype in dtypes:
        synchronize(device)
        start = time.perf_counter()
        score = score_bytes(model, data, device=device, dtype=dtype, progress=False)
        synchronize(device)
        seconds = time.perf_counter() - start
        out[label] = {
            "dtype": dtype_name(dtype),
            "seconds": round(seconds, 3),
            "bytes_per_s": round(len(data) / seconds, 1),
            "loss": round(score.loss, 5),
        }
    if "fp32" in out:
        out["auto_over_fp32"] = round(out["auto"]["bytes_per_s"] / out["fp32"]["bytes_per_s"], 2)
    out.update(target="none (throughput is reported)", met=None)
    return out


def lines(s: dict) -> list[str]:
    rows = [
        [s[label]["dtype"], fmt(s[label]["bytes_per_s"], ",.0f"), fmt(s[label]["loss"], ".4f")]
        for label in ("auto", "fp32")
        if label in s
    ]
    out = table([f"score_bytes, {s['bytes']:,} bytes, smoke model", "bytes/s", "loss"], rows)
    if "auto_over_fp32" in s:
        out += ["", f"auto dtype over fp32: {s['auto_over_fp32']:.2f}x"]
    return out

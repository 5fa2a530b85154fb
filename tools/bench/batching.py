"""Section `batching`: get_batch on real memmapped streams (the train profile's rows and
block), as a share of a training step of the train section."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from bytechat.core.config import SOURCES
from tools.bench import train
from tools.bench.common import MIB, Context, fmt, median_time, table

TARGET_BATCH_SHARE = 0.01  # get_batch time / training step time


def run(ctx: Context) -> dict:
    from bytechat.data.batching import get_batch
    from bytechat.data.streams import open_stream, write_stream

    plan, profile, p_train = ctx.plan, ctx.params.profile("train"), ctx.params.data.p_train
    step_s = train.step_seconds(ctx)
    rng = np.random.default_rng(ctx.seed)
    sizes = {
        "wiki": plan.batch_stream_mb,
        "roam": plan.batch_stream_mb / 4,
        "primer": plan.batch_stream_mb / 16,
        "grounded": plan.batch_stream_mb / 2,
    }
    rows, block = profile.train.batch_size // profile.train.grad_accum, profile.model.block_size
    with tempfile.TemporaryDirectory(prefix="bytechat-bench-") as tmp:
        streams = {}
        for source in SOURCES:
            path = Path(tmp) / f"{source}_train.bin"
            data = rng.integers(32, 127, int(sizes[source] * MIB), dtype=np.uint8).tobytes()
            write_stream([data], path, "bench")
            streams[source] = open_stream(path)
        gen = torch.Generator().manual_seed(ctx.seed)
        seconds = median_time(lambda: get_batch(streams, p_train, rows, block, ctx.device, gen), plan.batch_calls)
        del streams  # close the memmaps before the folder goes
    share = seconds / step_s if step_s else None
    return {
        "rows": rows,
        "block_size": block,
        "stream_mb": {k: round(v, 3) for k, v in sizes.items()},
        "get_batch_us": round(seconds * 1e6, 1),
        "train_step_ms": round(step_s * 1e3, 1) if step_s else None,
        "share_of_step": share,
        "target": f"get_batch <= {TARGET_BATCH_SHARE:.0%} of a train-profile step (fast path)",
        "met": None if share is None else bool(share <= TARGET_BATCH_SHARE),
    }


def lines(s: dict) -> list[str]:
    return table(
        ["get_batch (B x T)", "µs", "train step ms", "share of step"],
        [
            [
                f"{s['rows']} x {s['block_size']}",
                fmt(s["get_batch_us"], ".1f"),
                fmt(s["train_step_ms"], ".1f"),
                fmt(s["share_of_step"], ".3%"),
            ]
        ],
    )

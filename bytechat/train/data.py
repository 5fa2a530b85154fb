"""The data a training run reads: every train/val byte stream (memmapped), the grounded
train stream's answer spans, the fingerprint that gates resumes (seed, mixes, stream
sha256s), and the fixed validation batches."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np
import torch

from bytechat.model import checkpoint as ckpt_io
from bytechat.core import paths
from bytechat.data.batching import DIALOGUE_SOURCES, document_starts, get_batch
from bytechat.core.config import SOURCES, DataConfig
from bytechat.train.distributed import Dist
from bytechat.core.rng import SeedOffset, make_generator
from bytechat.data.streams import open_spans, open_stream, read_meta

EVAL_SEED_OFFSET = SeedOffset.EVAL_BATCHES  # eval batches: their own generator, apart from the training sampler


@dataclass
class Data:
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]
    fingerprint: dict
    train_starts: dict[str, np.ndarray] = field(default_factory=dict)  # batching.document_starts
    val_starts: dict[str, np.ndarray] = field(default_factory=dict)
    train_spans: dict[str, np.ndarray] = field(default_factory=dict)  # per dialogue source: (N, 3) answer spans


def open_data(cfg: DataConfig, chat_fraction: float, block_size: int) -> Data:
    """Memmap every train/val stream and read the train answer spans (streams stage); the
    fingerprint (seed, mixes, sha256s) gates resumes."""
    train, val, shas, spans = {}, {}, {}, {}
    for source in SOURCES:
        for split, into in (("train", train), ("val", val)):
            path = paths.stream_path(source, split)
            into[source] = open_stream(path)
            shas[f"{source}_{split}"] = read_meta(path).get("sha256")
    for source in DIALOGUE_SOURCES:
        path = paths.spans_path(source, "train")
        if path.is_file():
            spans[source] = open_spans(path)
            shas[f"{source}_train_spans"] = hashlib.sha256(path.read_bytes()).hexdigest()
    fingerprint = {
        "p_train": dict(cfg.p_train),
        # Without a chat phase p_chat draws nothing: editing it must not cost a finished run.
        "p_chat": dict(cfg.p_chat) if chat_fraction > 0 else None,
        "chat_fraction": float(chat_fraction),
        "seed": int(cfg.seed),
        "streams": shas,
    }

    def starts(streams: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {s: document_starts(streams[s], block_size) for s in DIALOGUE_SOURCES if len(streams[s]) > block_size}

    return Data(
        train=train,
        val=val,
        fingerprint=fingerprint,
        train_starts=starts(train),
        val_starts=starts(val),
        train_spans=spans,
    )


def eval_batches(
    val: Mapping[str, np.ndarray],
    rows: int,
    block: int,
    n_batches: int,
    seed: int,
    device: torch.device,
    dist: Dist,
    starts: Mapping[str, np.ndarray] | None = None,
) -> dict[str, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Fixed validation batches per source, drawn once from their own generator, so every
    eval of a run scores the same bytes and never disturbs the training sampler."""
    batches = {}
    for source, stream in val.items():
        if len(stream) < block + 1:
            ckpt_io.warn(
                f"{paths.stream_path(source, 'val')}: {len(stream)} bytes, too short for "
                f"block_size {block}; not used for validation"
            )
            continue
        gen = make_generator(seed + EVAL_SEED_OFFSET)
        only = {name: float(name == source) for name in SOURCES}
        batches[source] = [
            get_batch(
                {source: stream},
                only,
                rows,
                block,
                device,
                gen,
                rank=dist.rank,
                world_size=dist.world_size,
                starts=starts,
            )
            for _ in range(n_batches)
        ]
    return batches

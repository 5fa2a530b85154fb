"""Training batches drawn from several byte streams by a probability mix.

Each row first draws its source by `p`, then a uniformly random window of T+1 bytes in
that source. All randomness comes from one explicit torch.Generator, so the sequence of
batches is a pure function of its seed (and its state can be checkpointed for resume).

Dialogue sources (DIALOGUE_SOURCES) are drawn at a document start instead: a window that
starts mid-dialogue would show an answer without the notes or question it answers, which
teaches the model to make answers up. `document_starts` finds the starts once per run.

A source with answer spans (`spans`: the grounded dialogues' (reply, first, last) byte
offsets, written by the streams stage) also gives each row the first span whose reply
starts inside it, as the extractive answer head's target (bytechat/model/span_head.py).

Under DDP every rank draws the *global* batch's sources and offsets from the same
generator and gathers only its own slice of rows: the data a step sees is the same
whatever the world size.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np
import torch

from bytechat.core.config import ConfigError, check_probabilities
from bytechat.model.span_head import IGNORE


DIALOGUE_SOURCES = ("primer", "grounded")  # rows start at a dialogue's first byte
_SEPARATOR = (0x0A, 0x0A)  # streams join documents with "\n\n" (bytechat.data.streams.SEPARATOR)


class BatchError(ValueError):
    pass


def document_starts(stream: np.ndarray, T: int) -> np.ndarray:
    """Offsets of the documents of a stream (0 and each byte after a "\n\n") from which a
    full window of T+1 bytes fits; [0] when none does."""
    data = np.asarray(stream)
    after = np.flatnonzero((data[:-1] == _SEPARATOR[0]) & (data[1:] == _SEPARATOR[1])) + 2
    starts = np.concatenate(([0], after))
    starts = starts[starts <= len(data) - T - 1]
    return starts if len(starts) else np.zeros(1, dtype=np.int64)


def get_batch(
    streams: Mapping[str, np.ndarray],
    p: Mapping[str, float],
    B: int,
    T: int,
    device: str | torch.device,
    generator: torch.Generator,
    *,
    rank: int = 0,
    world_size: int = 1,
    starts: Mapping[str, np.ndarray] | None = None,
    spans: Mapping[str, np.ndarray] | None = None,
) -> tuple[torch.Tensor, ...]:
    """x, y of shape (B // world_size, T), int64, y shifted by one byte; ids in 0..255.

    starts: per source, the offsets rows of that source begin at (document_starts);
    other sources start anywhere. Either way one uniform draw per row, so the generator
    advances the same.
    spans: per source, its answer spans (N, 3) sorted by reply offset; given (even
    empty), a third tensor (B // world_size, 3) follows: each row's span_in_window, or
    IGNORE."""
    names = [name for name in p if p[name] > 0]
    try:
        check_probabilities(dict(p), "p", sources=None)
    except ConfigError as exc:
        raise BatchError(str(exc)) from None
    for name in names:
        if name not in streams:
            raise BatchError(f"p.{name}: no stream named {name!r} (have: {', '.join(streams)})")
        if len(streams[name]) < T + 1:
            raise BatchError(f"stream {name!r}: {len(streams[name])} bytes is shorter than block_size+1 = {T + 1}")
    if B % world_size:
        raise BatchError(f"batch size {B} is not divisible by world size {world_size}")

    probs = torch.tensor([p[name] for name in names], dtype=torch.float64)
    which = torch.multinomial(probs, B, replacement=True, generator=generator)
    # One uniform draw per row, scaled to that row's stream length (float64 is exact
    # enough for streams far beyond wikitext-103).
    u = torch.rand(B, generator=generator, dtype=torch.float64)

    local = B // world_size
    rows = range(rank * local, (rank + 1) * local)
    buf = np.empty((local, T + 1), dtype=np.int64)
    targets = np.full((local, 3), IGNORE, dtype=np.int64)
    for out_row, row in enumerate(rows):
        name = names[int(which[row])]
        stream = streams[name]
        if starts is not None and name in starts:
            start = int(starts[name][int(u[row] * len(starts[name]))])
        else:
            start = int(u[row] * (len(stream) - T))  # 0 .. len - T - 1
        buf[out_row] = stream[start : start + T + 1]
        if spans is not None and name in spans:
            targets[out_row] = span_in_window(spans[name], start, T)
    data = torch.from_numpy(buf)
    out = (data[:, :-1], data[:, 1:]) + ((torch.from_numpy(targets),) if spans is not None else ())
    device = torch.device(device)
    if device.type == "cuda":
        return tuple(t.pin_memory().to(device, non_blocking=True) for t in out)
    return tuple(t.contiguous().to(device) for t in out)


def span_in_window(spans: np.ndarray, start: int, T: int) -> tuple[int, int, int]:
    """The first of spans (N, 3: reply, first, last, absolute and sorted by reply) that lies
    wholly in the window of T positions from start, as positions in it; else IGNORE."""
    i = int(np.searchsorted(spans[:, 0], start)) if len(spans) else 0
    while i < len(spans) and spans[i, 0] < start + T:
        at, first, last = (int(v) - start for v in spans[i])
        if 0 <= first <= last < at:
            return at, first, last
        i += 1
    return IGNORE, IGNORE, IGNORE

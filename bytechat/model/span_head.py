"""An extractive answer head: where in the notes shown does the answer start and end?

The language model learns to quote whole blocks; asked "when is Jonas's birthday?" it
quotes the birthday line, joke and all. Extractive QA systems point at the answer
instead, and so does this head: from the final hidden state at the reply's first
position (the byte before it, whose next byte the reply starts with), a query for the
start and one for the end; a key for every earlier position. Trained beside the language
model (cross-entropy on where the gold span of a grounded dialogue sits in the notes,
weight ModelConfig.span_weight), read at decode time as the best span (start <= end) in
the best block shown (bytechat/serve/span_answer.py).

A heavy weight wrecks generation and a head on detached states points badly (docs/notes.md,
"Measured: an extractive answer head"), so it trains the trunk a little, at weight 0.03.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

IGNORE = -1  # a span target of a row without a labelled reply


class SpanHead(nn.Module):
    def __init__(self, n_embd: int, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.query = nn.Linear(n_embd, 2 * dim, bias=False)  # start's and end's, from the reply's position
        self.key = nn.Linear(n_embd, 2 * dim, bias=False)

    def forward(self, h: torch.Tensor, at: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h (B, T, C) final states, at (B,) the reply's position per row -> start and end
        scores (B, T) over the positions before at (-inf from at on)."""
        B, T, _ = h.shape
        q = self.query(h[torch.arange(B, device=h.device), at]).view(B, 2, self.dim)
        k = self.key(h).view(B, T, 2, self.dim)
        scores = torch.einsum("bjd,btjd->bjt", q.float(), k.float()) / math.sqrt(self.dim)
        later = torch.arange(T, device=h.device)[None, :] >= at[:, None]
        scores = scores.masked_fill(later[:, None, :], float("-inf"))
        return scores[:, 0], scores[:, 1]

    def loss(self, h: torch.Tensor, spans: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the start and the end over the rows with a labelled reply.

        spans (B, 3): (the reply's position, the span's first byte, its last byte) per row,
        IGNORE where the row has none; the mean of no rows is 0 (still a graph over the
        head's weights, so every rank's backward reaches the same parameters under DDP)."""
        at = spans[:, 0]
        labelled = at != IGNORE
        begin, end = self(h, at.clamp_min(0))
        first = spans[:, 1].masked_fill(~labelled, IGNORE)
        last = spans[:, 2].masked_fill(~labelled, IGNORE)
        total = F.cross_entropy(begin.masked_fill(~labelled[:, None], 0.0), first, ignore_index=IGNORE, reduction="sum")
        total = total + F.cross_entropy(
            end.masked_fill(~labelled[:, None], 0.0), last, ignore_index=IGNORE, reduction="sum"
        )
        return total / labelled.sum().clamp_min(1)

"""How sure a model must be to say "not in your notes" where notes are shown.

Faithful decoding leaves a question shown notes two replies: quote a shown block, or
abstain; serve.copying lowers the abstention's first byte by a margin (ABSTAIN_MARGIN, 3
nats, chosen on the dev sets of two smoke models). How good a model's own refusals are
differs from model to model (docs/chat.md: the example graph's smoke model refused few
answerable questions, a new user's a sixth of its held-out ones), so the eval stage
calibrates the margin per model, on held-out phrasings of the user's own train pages
(asked of pages trained on, in words never trained on, pronoun follow-ups among them;
drawn apart from the eval's held-out sets, and the natural sets stay unused): of
GRID, the margin with the fewest refusals of answerable questions less refusals of near
misses and uncovered ones, on a tie the one nearest ABSTAIN_MARGIN: where the held-out
phrasings give no evidence either way (a model that prefers to refuse none of them, as
both smoke models of 2026-12-05 did), the default stands, since natural questions, follow-ups
above all, are where a small model refuses what its notes answer. The export carries it (config.json
`abstain_margin`) and chat decodes with it.
"""

from __future__ import annotations

from typing import Sequence

import torch

from bytechat.core import paths
from bytechat.core.rng import SeedOffset
from bytechat.eval.grounded import prompt_for
from bytechat.eval.questions import (
    ABSTAINING,
    ANSWERING,
    FOLLOWUP_QUESTIONS,
    HELDOUT_QUESTIONS,
    Case,
    heldout_cases,
    heldout_followups,
    split_pages,
)
from bytechat.notes.index import NotesIndex
from bytechat.serve.batch_engine import prompt_bytes
from bytechat.serve.copying import ABSTAIN_MARGIN, FaithfulCopy, copy_guard
from bytechat.serve.generate import ChatEngine

GRID = (*(i / 2 for i in range(21)), 100.0)  # 0 to 10 nats in halves; 100: never refuse where notes are shown


def margins(engine: ChatEngine, index: NotesIndex, cases: Sequence[Case]) -> list[tuple[bool, float]]:
    """(answerable, margin) per case whose reply may only quote or abstain: how much the
    model prefers the abstention's first byte to the best quote's, in nats (> 0: greedy
    decoding with no margin abstains)."""
    out = []
    for case in cases:
        if case.kind not in ANSWERING and case.kind not in ABSTAINING:
            continue
        prompt = prompt_bytes(engine, prompt_for(engine, index, case)[0])
        copy = copy_guard(prompt, True, engine.answer_style)
        refusing = copy.lowered(b"") if isinstance(copy, FaithfulCopy) else []
        if not refusing:
            continue
        quoting = [b for b in copy.allowed(b"") or [] if b not in refusing]
        window = torch.tensor([list(prompt[-engine.block_size :])], dtype=torch.long, device=engine.device)
        with torch.inference_mode():
            log_probs = engine.model(window)[0][0, -1].float()
        margin = float(log_probs[refusing].max() - log_probs[quoting].max()) if quoting else float("inf")
        out.append((case.kind in ANSWERING, margin))
    return out


def calibrate(measured: Sequence[tuple[bool, float]]) -> float:
    """The margin of GRID with the fewest false refusals less right ones (see above)."""

    def cost(m: float) -> int:
        return sum((1 if answerable else -1) for answerable, margin in measured if margin > m)

    return min(GRID, key=lambda m: (cost(m), abs(m - ABSTAIN_MARGIN), m))


def calibrated_margin(engine: ChatEngine, seed: int) -> float:
    """calibrate() on held-out phrasings of the pipeline's train pages (artifacts/splits,
    artifacts/notes), as many as the eval's heldout_train, and held-out follow-ups about
    them (where a small model refuses what its notes answer most), each drawn with a seed
    of its own."""
    train_pages, val_pages = split_pages()
    cases = heldout_cases(
        train_pages, HELDOUT_QUESTIONS, seed + SeedOffset.REFUSAL_CALIBRATION, [*train_pages, *val_pages]
    )
    cases += heldout_followups(train_pages, FOLLOWUP_QUESTIONS, seed + SeedOffset.REFUSAL_FOLLOWUPS)
    with NotesIndex.open(paths.notes_index()) as index:
        return calibrate(margins(engine, index, cases))

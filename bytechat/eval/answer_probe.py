"""The answer probe: how often a model in training answers a fixed set of note questions
right, greedily, through the same chat path as the terminal and web chat.

Why the trainer needs it: held-out loss and answers disagree late in a run. In the train
profile's run the held-out dialogue loss was lowest at step 15,500, while the greedy
replies of step 20,000 held the asked fact more often (0.70 -> 0.82 on validation pages)
and abstained on every question the notes do not cover (0.75 -> 1.00): a more confident
model pays more for its wrong bytes and picks the right one more often (docs/training.md).
So in the chat phase, best.pt goes by this share first (bytechat.train.step.is_better).

The questions are held-out phrasings (bytechat.eval.phrasings) about train pages only,
drawn with a seed of their own, and none of them is a question the eval asks: selection
never sees the eval's questions nor the validation blocks the eval scores (a test checks
both). Most are about blocks; an eighth are near misses and some are uncovered (it must
say the notes lack them).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch

from bytechat.core import paths
from bytechat.core.rng import SeedOffset
from bytechat.eval import phrasings
from bytechat.eval.grounded import ask_batched
from bytechat.eval.questions import Case, heldout_cases, heldout_sets, split_pages
from bytechat.notes.index import NotesIndex

SEED_OFFSET = SeedOffset.ANSWER_PROBE  # the eval draws with seed + SeedOffset.HELDOUT_*: these questions are others
REPLY_BYTES = 160  # a gold fact sits in a reply's first line


class ProbeError(ValueError):
    """The probe cannot be built (a missing notes index or split); one line."""


class AnswerProbe:
    def __init__(self, cases: Sequence[Case], index_path: Path) -> None:
        self.cases = list(cases)
        self.index_path = index_path

    @classmethod
    def for_run(cls, questions: int, seed: int) -> "AnswerProbe":
        """questions drawn from the pipeline's roam splits, answered from its notes index."""
        index = paths.notes_index()
        train_split, val_split = (paths.splits_dir() / f"roam_{s}.jsonl" for s in ("train", "val"))
        for needed, stage in ((index, "index"), (train_split, "split"), (val_split, "split")):
            if not needed.exists():
                raise ProbeError(
                    f"{needed}: missing, and train.answer_probe needs it (run `dvc repro {stage}`, "
                    "or set train.answer_probe: 0)"
                )
        train_pages, val_pages = split_pages()
        everything = [*train_pages, *val_pages]
        eval_asks = {c.question for cases in heldout_sets(train_pages, val_pages, seed).values() for c in cases}
        n_uncovered = questions // 5
        s = seed + SEED_OFFSET
        drawn = heldout_cases(train_pages, 2 * questions, s, everything, uncovered=0)
        cases = [c for c in drawn if c.question not in eval_asks][: questions - n_uncovered]
        cases += heldout_cases(train_pages, 0, s + 1, everything, n_uncovered, phrasings.PROBE_TOPICS)
        return cls(cases, index)

    def score(self, model: torch.nn.Module) -> float:
        """The share of questions answered right (the gold fact in the reply, or an
        abstention where the notes have none). Greedy, on a copy of the model (the chat
        engine re-lays weights for decoding), and with the global RNG states restored,
        so a run's weights and batches do not depend on whether the probe ran."""
        from bytechat.serve.generate import ChatEngine  # the decoder; not needed by runs without a probe

        with torch.random.fork_rng(devices=[]), NotesIndex.open(self.index_path) as index:
            engine = ChatEngine(copy.deepcopy(model))
            right = sum(r.correct for r in ask_batched(engine, index, self.cases, REPLY_BYTES))
        return right / max(1, len(self.cases))

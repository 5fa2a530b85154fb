"""The answer probe: how often a model in training answers a fixed set of note questions
right, greedily, through the same chat path as the terminal and web chat.

Why the trainer needs it: held-out loss and answers disagree late in a run. In the train
profile's run the held-out dialogue loss was lowest at step 15,500, while the greedy
replies of step 20,000 held the asked fact more often (0.70 -> 0.82 on validation pages)
and abstained on every question the notes do not cover (0.75 -> 1.00): a more confident
model pays more for its wrong bytes and picks the right one more often (docs/training.md).
So in the chat phase, best.pt goes by this share first (bytechat.train_step.is_better).

The questions are those of the eval stage (bytechat.grounded_eval), drawn with seeds of
their own so that selection never sees the eval's questions: 40% about train pages (a
person asks about notes the model trained on), 40% about validation pages (copying notes
it never saw) and 20% the notes do not cover (it must say so).
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Sequence

import torch

from bytechat import grounded, paths
from bytechat.grounded_eval import Case, ask, page_cases, uncovered_cases
from bytechat.notes_index import NotesIndex

SEED_OFFSET = 40  # grounded_eval draws with seed + 21..23: these questions are others
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
        train_pages = grounded.read_split_pages(train_split)
        val_pages = grounded.read_split_pages(val_split)
        everything = [*train_pages, *val_pages]
        n_uncovered = questions // 5
        n_val = (questions - n_uncovered) // 2 if val_pages else 0
        n_train = questions - n_uncovered - n_val
        s = seed + SEED_OFFSET
        cases = [
            *page_cases(train_pages, n_train, s + 1, everything),
            *page_cases(val_pages, n_val, s + 2, everything),
            *uncovered_cases(n_uncovered, s + 3),
        ]
        return cls(cases, index)

    def score(self, model: torch.nn.Module) -> float:
        """The share of questions answered right (the gold fact in the reply, or an
        abstention where the notes have none). Greedy, on a copy of the model (the chat
        engine re-lays weights for decoding), and with the global RNG states restored,
        so a run's weights and batches do not depend on whether the probe ran."""
        from bytechat.generate import ChatEngine  # the decoder; not needed by runs without a probe

        with torch.random.fork_rng(devices=[]), NotesIndex.open(self.index_path) as index:
            engine = ChatEngine(copy.deepcopy(model))
            right = sum(ask(engine, index, c.question, REPLY_BYTES, case=c).correct for c in self.cases)
        return right / max(1, len(self.cases))

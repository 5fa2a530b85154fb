"""How often retrieval puts a block that answers first: the block chat places last, the
one the model quotes. Retrieval alone, no model: seconds.

For each page set of the split stage (artifacts/splits/roam_{train,val}.jsonl; run
`dvc repro split` first), it generates questions the way the eval stage does
(bytechat.eval.grounded.heldout_cases, several seeds), plus the hand-written
natural set's dev part (data/unseen-notes, over its own index; the test part is left
for the end of a piece of work), retrieves as chat does (retrieve_for_chat with
a 512-byte context's notes budget) over an index of all pages, and reports

    top1       the first block answers (it is the gold block, another block that answers
               the question, or it holds a gold fact)
    recall@3   a block that answers is among the blocks shown
    misses     by question kind

    .venv/bin/python -m tools.retrieval_quality [--seeds 5] [--per-seed 40] [--show]

docs/notes.md has the table this measured, change by change.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Sequence

from bytechat.notes import grounded
from bytechat.core import paths
from bytechat.eval.grounded import ANSWERING, Case, heldout_cases, load_questions, unseen_notes
from bytechat.eval.scoring import contains
from bytechat.notes.roam import load_pages
from bytechat.notes.blocks import all_blocks
from bytechat.notes.index import Hit, NotesIndex
from bytechat.notes.retrieval import notes_budget, retrieve_for_chat

CONTEXT_BYTES = 512


def shown(index: NotesIndex, case: Case) -> list[Hit]:
    messages = case.messages
    return retrieve_for_chat(index, messages, budget_bytes=notes_budget(CONTEXT_BYTES, messages))


def answers(case: Case, hit: Hit) -> bool:
    return (hit.page, hit.position) in case.blocks or contains(hit.text, case.answers)


def measure(index: NotesIndex, cases: Sequence[Case], show: bool = False) -> dict:
    first = found = 0
    kinds, misses = Counter(), Counter()
    for case in [c for c in cases if c.kind in ANSWERING]:
        hits = shown(index, case)
        kinds[case.kind] += 1
        first += bool(hits) and answers(case, hits[0])
        found += any(answers(case, h) for h in hits)
        if not (hits and answers(case, hits[0])):
            misses[case.kind] += 1
            if show:
                print(f"  miss ({case.kind}) {case.question!r} -> {[(h.page, h.position) for h in hits]}")
    n = max(1, sum(kinds.values()))
    return {
        "questions": n,
        "top1": round(first / n, 3),
        "recall_at_3": round(found / n, 3),
        "misses": dict(misses),
        "kinds": dict(kinds),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.retrieval_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, default=paths.splits_dir(), help="the split stage's output folder")
    parser.add_argument("--seeds", type=int, default=5, help="question sets per page set")
    parser.add_argument("--per-seed", type=int, default=40, help="questions per set")
    parser.add_argument("--show", action="store_true", help="print every miss")
    args = parser.parse_args(argv)
    train = grounded.read_split_pages(args.splits / "roam_train.jsonl")
    val = grounded.read_split_pages(args.splits / "roam_val.jsonl")
    everything = [*train, *val]
    report = {}
    with NotesIndex.build(all_blocks(everything)) as index:
        for name, pages, offset in (("train_pages", train, 0), ("val_pages", val, 1000)):
            cases = [
                c for seed in range(args.seeds) for c in heldout_cases(pages, args.per_seed, offset + seed, everything)
            ]
            report[name] = measure(index, cases, args.show)
    unseen = load_pages(unseen_notes())
    natural = [c for c in load_questions(unseen_notes() / "questions.jsonl", unseen) if c.split == "dev"]
    with NotesIndex.build(all_blocks(unseen)) as index:
        report["natural_dev"] = measure(index, natural, args.show)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

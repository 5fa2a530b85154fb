"""How often retrieval puts a block that answers first: the block chat places last, the
one the model quotes. Retrieval alone, no model: seconds.

For each page set of the split stage (artifacts/splits/roam_{train,val}.jsonl; run
`dvc repro split` first), it generates questions the way the eval stage does
(grounded_eval.page_cases, several seeds), retrieves as chat does (retrieve_for_chat with
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

from bytechat import grounded, paths
from bytechat.grounded_eval import Case, page_cases
from bytechat.notes import all_blocks
from bytechat.notes_index import Hit, NotesIndex
from bytechat.retrieval import notes_budget, retrieve_for_chat

CONTEXT_BYTES = 512


def shown(index: NotesIndex, question: str) -> list[Hit]:
    messages = [{"role": "user", "content": question}]
    return retrieve_for_chat(index, messages, budget_bytes=notes_budget(CONTEXT_BYTES, messages))


def answers(case: Case, hit: Hit) -> bool:
    return case.answered_by(hit.page, hit.position) or any(g in hit.text for g in case.gold)


def measure(index: NotesIndex, cases: Sequence[Case], show: bool = False) -> dict:
    first = found = 0
    kinds, misses = Counter(), Counter()
    for case in cases:
        hits = shown(index, case.question)
        kinds[case.kind] += 1
        first += bool(hits) and answers(case, hits[0])
        found += any(answers(case, h) for h in hits)
        if not (hits and answers(case, hits[0])):
            misses[case.kind] += 1
            if show:
                print(f"  miss ({case.kind}) {case.question!r} -> {[(h.page, h.position) for h in hits]}")
    n = max(1, len(cases))
    return {
        "questions": len(cases),
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
                c for seed in range(args.seeds) for c in page_cases(pages, args.per_seed, offset + seed, everything)
            ]
            report[name] = measure(index, cases, args.show)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

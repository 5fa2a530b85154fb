"""Retrieval alone, no model: does the search put a block that answers in front of the
model, and does it say "none found" when the notes do not hold the answer? Seconds.

Question sets, each retrieved as chat does it (retrieve_for_chat, a 512-byte context's
notes budget, the conversation for follow-ups):
    heldout_train, heldout_val   the eval's held-out phrasings (bytechat.eval.grounded
                                 heldout_cases, several seeds) about the split stage's
                                 train and validation pages, over an index of all pages
                                 (run `dvc repro split` first); heldout_followups: the
                                 eval's pronoun follow-ups about either (heldout_followups)
    natural_dev / natural_test   the hand-written set of data/unseen-notes over its own
                                 index; test only with --split test or all (it is kept
                                 for the end of a piece of work: never choose by it)
    --notes DIR                  any folder with a questions.jsonl beside its pages (the
                                 new user's graph: data/new-user-notes)
    small_talk_dev / _test       data/small-talk-probe.txt, small talk written for the
                                 small-talk rules (retrieval.wants_notes): its odd lines
                                 are dev, its even lines test (with --split test or all)
Per set:
    recall_at_1     the first block answers (the gold block, another block holding a gold
                    span); over answerable questions
    recall_at_3     a block that answers is among those shown
    followup_recall_at_3   the same over follow-up turns
    false_none      answerable questions given no block at all
    none_uncovered  uncovered questions (no page on the topic) given no block
    none_near_miss  near misses (the page exists, the fact does not) given no block
    page_coverage   whole-page questions: the share of the page's key facts shown
    no_notes        small talk: the share of lines with topic words that chat sends no
                    notes (retrieval.wants_notes; a line with none never gets notes)

With --ckpt MODEL (an export folder or a checkpoint) the trained model reranks the
lexical search's candidates by query likelihood (tools/rerank.py), and each set
also reports latency_ms_p50 / latency_ms_p99: one question's retrieval, rerank included.

    .venv/bin/python -m tools.retrieval_quality [--split dev|test|all] [--notes DIR] [--ckpt MODEL] [--show]

docs/notes.md ("How retrieval works") has the figures, before and after each change.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path
from typing import Sequence

from bytechat.core import paths
from bytechat.eval.questions import (
    ABSTAINING,
    ANSWERING,
    Case,
    heldout_cases,
    heldout_followups,
    load_questions,
    unseen_notes,
)
from bytechat.eval.scoring import contains, coverage
from bytechat.eval.small_talk import probe
from bytechat.notes import grounded
from bytechat.notes.blocks import all_blocks
from bytechat.notes.index import Hit, NotesIndex
from bytechat.notes.query import query_terms
from bytechat.notes.retrieval import notes_budget, retrieve_for_chat, wants_notes
from bytechat.notes.roam import load_pages

CONTEXT_BYTES = 512


def shown(index: NotesIndex, case: Case, scorer=None) -> list[Hit]:
    """The blocks chat shows for case; with scorer (a rerank.QueryLikelihood), reranked."""
    messages = case.messages
    budget = notes_budget(CONTEXT_BYTES, messages)
    if scorer is None:
        return retrieve_for_chat(index, messages, budget_bytes=budget)
    from tools.rerank import retrieve_reranked  # torch only when a model is given

    return retrieve_reranked(index, messages, scorer, budget_bytes=budget)


def answers(case: Case, hit: Hit) -> bool:
    return (hit.page, hit.position) in case.blocks or contains(hit.text, case.answers)


def _share(values: list[bool]) -> float | None:
    return round(sum(values) / len(values), 3) if values else None


def measure(index: NotesIndex, cases: Sequence[Case], show: bool = False, scorer=None) -> dict:
    first, found, follow, none, misses = [], [], [], [], Counter()
    refused = {kind: [] for kind in ABSTAINING}
    pages, seconds = [], []
    for case in cases:
        start = time.perf_counter()
        hits = shown(index, case, scorer)
        seconds.append(time.perf_counter() - start)
        if case.kind in ANSWERING:
            first.append(bool(hits) and answers(case, hits[0]))
            found.append(any(answers(case, h) for h in hits))
            none.append(not hits)
            if case.kind == "followup":
                follow.append(found[-1])
            if not first[-1]:
                misses[case.kind] += 1
                if show:
                    print(f"  miss ({case.kind}) {case.question!r} -> {[(h.page, h.position) for h in hits]}")
        elif case.kind in ABSTAINING:
            refused[case.kind].append(not hits)
            if hits and show:
                print(f"  not none ({case.kind}) {case.question!r} -> {[(h.page, h.position) for h in hits]}")
        elif case.kind == "page" and case.facts:
            pages.append(coverage("\n".join(h.text for h in hits), case.facts))
    report = {
        "questions": len(cases),
        "recall_at_1": _share(first),
        "recall_at_3": _share(found),
        "followup_recall_at_3": _share(follow),
        "false_none": _share(none),
        "none_uncovered": _share(refused["uncovered"]),
        "none_near_miss": _share(refused["near_miss"]),
        "page_coverage": round(sum(pages) / len(pages), 3) if pages else None,
        "misses": dict(misses),
    }
    if scorer is not None and seconds:
        ms = sorted(1000 * s for s in seconds)
        report["latency_ms_p50"] = round(ms[len(ms) // 2], 1)
        report["latency_ms_p99"] = round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1)
    return report


def natural(folder: Path, split: str, show: bool, scorer=None) -> dict:
    pages = load_pages(folder)
    cases = load_questions(folder / "questions.jsonl", pages)
    with NotesIndex.build(all_blocks(pages)) as index:
        parts = ("dev", "test") if split == "all" else (split,)
        return {part: measure(index, [c for c in cases if c.split == part], show, scorer) for part in parts}


def small_talk(split: str) -> dict:
    """For the probe's lines that have topic words, the share chat sends no notes."""
    parts = probe()
    out = {}
    for part in ("dev", "test") if split == "all" else (split,):
        topical = [line for line in parts[f"small_talk_{part}"] if query_terms(line)]
        talks = [[{"role": "user", "content": line}] for line in topical]
        out[f"small_talk_{part}"] = {"lines": len(topical), "no_notes": _share([not wants_notes(t) for t in talks])}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.retrieval_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--splits", type=Path, default=paths.splits_dir(), help="the split stage's output folder")
    parser.add_argument("--seeds", type=int, default=5, help="held-out question sets per page set")
    parser.add_argument("--per-seed", type=int, default=40, help="questions per held-out set")
    parser.add_argument("--split", choices=("dev", "test", "all"), default="dev", help="natural sets' part")
    parser.add_argument("--notes", type=Path, help="also a folder of pages with its own questions.jsonl")
    parser.add_argument("--show", action="store_true", help="print every miss")
    parser.add_argument("--ckpt", type=Path, help="rerank by this model's query likelihood (export or checkpoint)")
    args = parser.parse_args(argv)
    scorer = None
    if args.ckpt is not None:
        from bytechat.model.export import load_model
        from tools.rerank import QueryLikelihood

        scorer = QueryLikelihood(load_model(args.ckpt)[0])
    report = {}
    if (args.splits / "roam_train.jsonl").is_file():
        train = grounded.read_split_pages(args.splits / "roam_train.jsonl")
        val = grounded.read_split_pages(args.splits / "roam_val.jsonl")
        everything = [*train, *val]
        with NotesIndex.build(all_blocks(everything)) as index:
            for name, pages, offset in (("heldout_train", train, 0), ("heldout_val", val, 1000)):
                cases = [
                    c
                    for seed in range(args.seeds)
                    for c in heldout_cases(pages, args.per_seed, offset + seed, everything)
                ]
                report[name] = measure(index, cases, args.show, scorer)
            follow_ups = [
                c for seed in range(args.seeds) for c in heldout_followups(everything, args.per_seed, 2000 + seed)
            ]
            report["heldout_followups"] = measure(index, follow_ups, args.show, scorer)
    for part, figures in natural(unseen_notes(), args.split, args.show, scorer).items():
        report[f"natural_{part}"] = figures
    report.update(small_talk(args.split))
    if args.notes:
        for part, figures in natural(args.notes, args.split, args.show, scorer).items():
            report[f"{args.notes.name}_{part}"] = figures
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

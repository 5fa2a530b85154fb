"""Chat-with-notes quality, measured the way a person meets it: question -> retrieval from
the notes index -> the model's greedy reply, exactly as the terminal and web chat do it.

Metrics (share of replies, 0..1):
    grounded_accuracy_train_pages   replies holding the gold fact, questions about pages
                                    the model trained on (a person asking about their notes)
    grounded_accuracy_val_pages     the same for validation pages (never trained on: copying)
    grounded_accuracy_unseen_notes  hand-written questions on data/unseen-notes/, a folder no
                                    model of this project trains on (its own small index)
    grounded_abstention             questions the notes do not cover, answered "not in your notes"
    grounded_recall_at_3            a block that answers among retrieval's top 3 (retrieval alone)
    chat_stop_rate                  everyday prompts whose reply ends on its own

Questions about train/val pages come from bytechat.grounded.questions on the blocks of
those pages (seeded); the uncovered ones from its uncovered templates.
"""

from __future__ import annotations

import json
import random
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tqdm.auto import tqdm

from bytechat import grounded, paths
from bytechat.data.roam import RoamPage, load_pages
from bytechat.generate import ChatEngine, SamplingConfig
from bytechat.notes import NoteBlock, all_blocks, lead_blocks
from bytechat.notes_index import TOKENIZER, NotesIndex, match_expression
from bytechat.retrieval import notes_budget, retrieve_for_chat, with_notes

QUESTIONS_PER_SPLIT = 100  # per page set: one answer moves a share by 0.01
UNCOVERED_QUESTIONS = 20
REPLY_BYTES = 256
UNSEEN_NOTES = paths.ROOT / "data" / "unseen-notes"
ABSTAIN_MARKERS = (
    "couldn't find",
    "could not find",
    "not in your notes",
    "don't mention",
    "doesn't mention",
    "no notes",
    "nothing about",
    "not find",
)
EVERYDAY_PROMPTS = (
    "hi",
    "hello!",
    "good morning",
    "hey, how are you?",
    "thanks!",
    "thank you, that helped",
    "bye",
    "who are you?",
    "what can you do?",
    "how do I use you?",
    "ok",
    "cool",
    "tell me a joke",
    "what is the capital of France?",
    "what's 2 + 2?",
    "what is a byte?",
    "I'm tired today",
    "can you help me plan my day?",
    "what did I write about sourdough?",
    "what's on my todo list?",
    "summarise my notes on running",
    "when is my next trip?",
    "do you remember what I asked?",
    "remind me to buy milk",
    "you're great",
)


@dataclass
class Case:
    question: str
    gold: list[str]  # any of these in the reply counts; [] = uncovered (must abstain)
    page: str = ""
    position: int | None = None  # the gold block
    kind: str = ""
    also: list[tuple[str, int]] = field(default_factory=list)  # other blocks that answer it

    def answered_by(self, page: str, position: int) -> bool:
        return (page, position) == (self.page, self.position) or (page, position) in self.also


@dataclass
class Result:
    case: Case
    reply: str
    finish: str
    sources: list[str] = field(default_factory=list)

    @property
    def correct(self) -> bool:
        if not self.case.gold:
            return abstained(self.reply)
        return any(g in self.reply for g in self.case.gold)


def abstained(reply: str) -> bool:
    low = reply.lower().replace("’", "'")
    return any(marker in low for marker in ABSTAIN_MARKERS)


def page_cases(pages: Sequence[RoamPage], n: int, seed: int, all_pages: Sequence[RoamPage]) -> list[Case]:
    """n questions about random blocks of pages (word rarity counted over all_pages). A
    keyword question ("anything about glass?") is answered by any line of the notes that
    holds its word, so each such line is a gold fact too: a person asking that accepts
    either of their two notes on glass."""
    blocks = all_blocks(pages)
    if not blocks:
        return []
    everything = all_blocks(all_pages)
    counts = grounded.word_counts(everything)
    lines = WordLines(everything)
    leads = lead_blocks(blocks)
    rng = random.Random(seed)
    cases: list[Case] = []
    for block in rng.sample(blocks, len(blocks)):
        options = grounded.questions(block, rng, counts, (block.page, block.position) in leads)
        if options:
            q = rng.choice(options)
            case = Case(q.text, [q.gold], block.page, block.position, q.kind)
            for other, line in lines.holding(q.word) if q.word else []:
                case.gold += [line] if line not in case.gold else []
                case.also += [(other.page, other.position)] if other != block else []
            cases.append(case)
        if len(cases) == n:
            break
    return cases


class WordLines:
    """The lines of some blocks, searchable by word the way the notes index matches one
    (FTS5 with the same tokenizer: "errors" finds "error", "visited" finds "visit")."""

    def __init__(self, blocks: Sequence[NoteBlock]) -> None:
        self._rows = [(b, line.strip()) for b in blocks for line in b.text.split("\n")]
        self._db = sqlite3.connect(":memory:")
        self._db.execute(f"CREATE VIRTUAL TABLE lines USING fts5(line, tokenize='{TOKENIZER}')")
        self._db.executemany(
            "INSERT INTO lines (rowid, line) VALUES (?, ?)", [(i, l) for i, (_, l) in enumerate(self._rows)]
        )

    def holding(self, word: str) -> list[tuple[NoteBlock, str]]:
        """(block, line as a gold fact) for each line that holds word, in block order."""
        found = self._db.execute(
            "SELECT rowid FROM lines WHERE lines MATCH ? ORDER BY rowid", (match_expression([word]),)
        )
        return [(self._rows[i][0], grounded.clip(self._rows[i][1])) for (i,) in found]


def uncovered_cases(n: int, seed: int) -> list[Case]:
    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        d = grounded.uncovered_dialogue(rng, lambda q, k: [], 3, 512, f"Ottoline {rng.choice('BCDFGKLMNPRST')}.")
        cases.append(Case(d.messages[1]["content"], [], kind="uncovered"))
    return cases


def unseen_cases(folder: Path = UNSEEN_NOTES) -> list[Case]:
    lines = (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines()
    return [Case(r["question"], r["gold"], r["page"], kind="unseen") for r in map(json.loads, lines) if r]


def ask(
    engine: ChatEngine, index: NotesIndex | None, question: str, max_bytes: int = REPLY_BYTES, case: Case | None = None
) -> Result:
    """One question through the chat path (retrieval when index is given), greedy; the
    result is scored against case (default: an uncovered one)."""
    messages = [{"role": "user", "content": question}]
    hits = []
    if index is not None:
        hits = retrieve_for_chat(index, messages, budget_bytes=notes_budget(engine.block_size, messages))
        messages = with_notes(messages, hits)
    done = engine.reply(messages, SamplingConfig(temperature=0.0, max_new_tokens=max_bytes), seed=0)
    return Result(case or Case(question, []), done.reply, done.finish_reason, [h.page for h in hits])


def run_cases(engine: ChatEngine, index: NotesIndex, cases: Sequence[Case], desc: str) -> list[Result]:
    return [ask(engine, index, case.question, case=case) for case in tqdm(cases, desc=desc, unit="q", leave=False)]


def recall_at_3(index: NotesIndex, cases: Sequence[Case]) -> float:
    found = 0
    for case in cases:
        found += any(case.answered_by(h.page, h.position) for h in index.search(case.question, 3))
    return found / max(1, len(cases))


def share(results: Sequence[Result]) -> float:
    return sum(r.correct for r in results) / max(1, len(results))


def evaluate_grounded(engine: ChatEngine, seed: int, unseen: Path = UNSEEN_NOTES) -> tuple[dict, str]:
    """(metrics, transcripts) for the pipeline's notes (artifacts/splits, artifacts/notes)."""
    train_pages = grounded.read_split_pages(paths.SPLITS_DIR / "roam_train.jsonl")
    val_pages = grounded.read_split_pages(paths.SPLITS_DIR / "roam_val.jsonl")
    everything = [*train_pages, *val_pages]
    train_cases = page_cases(train_pages, QUESTIONS_PER_SPLIT, seed + 21, everything)
    val_cases = page_cases(val_pages, QUESTIONS_PER_SPLIT, seed + 22, everything)
    with NotesIndex.open(paths.NOTES_INDEX) as index:
        results = {
            "train_pages": run_cases(engine, index, train_cases, "train pages"),
            "val_pages": run_cases(engine, index, val_cases, "val pages"),
            "uncovered": run_cases(engine, index, uncovered_cases(UNCOVERED_QUESTIONS, seed + 23), "uncovered"),
            "everyday": run_cases(engine, index, [Case(p, []) for p in EVERYDAY_PROMPTS], "everyday"),
        }
        recall = recall_at_3(index, train_cases + val_cases)
    with NotesIndex.build(all_blocks(load_pages(unseen))) as unseen_index:
        results["unseen_notes"] = run_cases(engine, unseen_index, unseen_cases(unseen), "unseen notes")
    metrics = {
        "grounded_accuracy_train_pages": share(results["train_pages"]),
        "grounded_accuracy_val_pages": share(results["val_pages"]),
        "grounded_accuracy_unseen_notes": share([r for r in results["unseen_notes"] if r.case.gold]),
        "grounded_abstention": share(results["uncovered"]),
        "grounded_abstention_unseen_notes": share([r for r in results["unseen_notes"] if not r.case.gold]),
        "grounded_recall_at_3": recall,
        "chat_stop_rate": sum(r.finish == "stop" for rs in results.values() for r in rs)
        / sum(len(rs) for rs in results.values()),
        "chat_stop_rate_everyday": sum(r.finish == "stop" for r in results["everyday"]) / len(results["everyday"]),
    }
    return metrics, transcripts(results)


def transcripts(results: dict[str, list[Result]]) -> str:
    parts = []
    for name, rs in results.items():
        parts.append(f"## {name}")
        for r in rs:
            mark = "" if name == "everyday" else (" [ok]" if r.correct else f" [MISS: {r.case.gold}]")
            sources = f"\n  sources: {' · '.join(r.sources)}" if r.sources else ""
            parts.append(f"user: {r.case.question}\nassistant: {r.reply}\n  ({r.finish}){mark}{sources}")
    return "\n\n".join(parts) + "\n"

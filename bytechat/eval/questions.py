"""The eval's question sets: held-out phrasings of the pipeline's own notes (generated,
seeded: bytechat.eval.phrasings), their pronoun follow-ups, and the hand-written
questions.jsonl of a folder of notes (data/unseen-notes, a new user's graph), checked
against its pages. bytechat.eval.grounded asks them and scores the replies."""

from __future__ import annotations

import json
import random
import re
import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from bytechat.core import paths
from bytechat.core.rng import SeedOffset
from bytechat.eval import phrasings
from bytechat.notes import grounded
from bytechat.notes.blocks import NoteBlock, all_blocks, lead_blocks, page_blocks, plain
from bytechat.notes.dialogues import asking, conversation
from bytechat.notes.index import TOKENIZER
from bytechat.notes.query import match_expression
from bytechat.notes.roam import RoamPage

HELDOUT_QUESTIONS = 80  # per page set: 70 about blocks, 10 near misses (one answer moves a share ~0.014)
NEAR_MISS_SHARE = 0.125
UNCOVERED_QUESTIONS = 10  # in each held-out set
FOLLOWUP_QUESTIONS = 40  # held-out follow-ups: at most one a page, so a small graph gives fewer
EVAL_TRAIN_OFFSET, EVAL_VAL_OFFSET = SeedOffset.HELDOUT_TRAIN, SeedOffset.HELDOUT_VAL  # the two held-out sets
QUESTIONS_FILE = "questions.jsonl"
ANSWERING = ("fact", "followup", "paraphrase", "typo", "inflection", "attribute", "todo", "keyword")
ABSTAINING = ("near_miss", "uncovered")
KINDS = (*ANSWERING, "page", *ABSTAINING)


class QuestionsError(ValueError):
    """A question file is unreadable or names what its notes do not hold; one line."""


@dataclass
class Case:
    question: str
    answers: list[str]  # gold answer spans; [] for near misses, uncovered and everyday
    kind: str
    page: str = ""
    history: list[dict[str, str]] = field(default_factory=list)  # earlier turns of a follow-up
    blocks: list[tuple[str, int]] = field(default_factory=list)  # (page, position) that answer it
    facts: list[str] = field(default_factory=list)  # a whole-page question: one key fact per block
    split: str = ""  # natural sets: dev | test
    id: str = ""

    @property
    def messages(self) -> list[dict[str, str]]:
        return [*self.history, {"role": "user", "content": self.question}]


def key_fact(block: NoteBlock) -> str:
    """What a summary of the page should say of this block: a `key: value` line's value,
    else the first words of its first line."""
    first = block.text.split("\n", 1)[0].strip()
    m = re.match(r"^[A-Za-z][\w' -]{0,30}: (.+)$", first)
    return m.group(1).strip() if m else " ".join(first.split()[:6])


def heldout_cases(
    pages: Sequence[RoamPage],
    n: int,
    seed: int,
    all_pages: Sequence[RoamPage],
    uncovered: int = UNCOVERED_QUESTIONS,
    topics: tuple[str, ...] = phrasings.UNCOVERED_TOPICS,
) -> list[Case]:
    """n held-out-phrasing questions about random blocks of pages (a share NEAR_MISS_SHARE
    of them near misses), then `uncovered` questions the notes do not cover. A keyword
    question ("was there a note mentioning glass?") is answered by any line that holds
    its word, so each such line is a gold span (word rarity is counted over all_pages)."""
    blocks = all_blocks(pages)
    if not blocks:
        return []
    everything = all_blocks(all_pages)
    counts = asking.word_counts(everything)
    lines = WordLines(everything)
    leads = lead_blocks(blocks)
    rng = random.Random(seed)
    n_near = round(n * NEAR_MISS_SHARE)
    cases: list[Case] = []
    for block in rng.sample(blocks, len(blocks)):
        if len(cases) == n - n_near:
            break
        options = asking.questions(
            block, rng, counts, (block.page, block.position) in leads, phrasings.HELDOUT_TEMPLATES
        )
        if not options:
            continue
        q = rng.choice(options)
        case = Case(phrasings.typed(q.text, rng), [q.answer], q.kind, block.page, blocks=[(block.page, block.position)])
        if q.kind == "page":
            page = next(p for p in pages if p.name == block.page)
            case.facts = [key_fact(b) for b in page_blocks(page)]
            case.answers = []
        for other, line in lines.holding(q.word) if q.word else []:
            case.answers += [line] if line not in case.answers else []
            case.blocks += [(other.page, other.position)] if other != block else []
        cases.append(case)
    for page in rng.sample(list(pages), len(pages)):
        if len(cases) >= n:
            break
        text = phrasings.near_miss(asking.title(page.name), page.text, rng)
        if text:
            cases.append(Case(phrasings.typed(text, rng), [], "near_miss", page.name))
    cases += [Case(phrasings.uncovered(rng, topics), [], "uncovered") for _ in range(uncovered)]
    return cases


def heldout_followups(pages: Sequence[RoamPage], n: int, seed: int) -> list[Case]:
    """Up to n two-turn questions: an attribute of a page asked in a held-out phrasing and
    answered with its quote, then another attribute of the same page asked with a pronoun
    (phrasings.FOLLOWUP_TEMPLATES: "how about her address?"), whose value is the gold.
    A page gives one, if it has two attributes with keys of their own."""
    rng = random.Random(seed)
    cases: list[Case] = []
    for page in rng.sample(list(pages), len(pages)):
        if len(cases) >= n:
            break
        blocks = page_blocks(page)
        attributes = {}  # key: (block, value), as the held-out attribute questions read them (asking.slots)
        for block in blocks:
            for slot in asking.slots(block, rng):
                if slot.family == "attribute" and not slot.answer.startswith("#"):  # a tag is no fact
                    attributes.setdefault(slot.fields["key"].lower(), (block, slot.answer))
        if len(attributes) < 2:
            continue
        first, then = rng.sample(sorted(attributes), 2)
        asked = rng.choice(phrasings.HELDOUT_TEMPLATES["attribute"]).format(title=asking.title(page.name), key=first)
        history = [
            {"role": "user", "content": asked},
            {"role": "assistant", "content": f"From [{page.name}] {attributes[first][0].text}"},
        ]
        question = rng.choice(phrasings.FOLLOWUP_TEMPLATES).format(key=then, **conversation.pronouns(blocks))
        block, value = attributes[then]
        cases.append(
            Case(phrasings.typed(question, rng), [value], "followup", page.name, history, [(page.name, block.position)])
        )
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
        """(block, line) for each line that holds word, in block order."""
        found = self._db.execute(
            "SELECT rowid FROM lines WHERE lines MATCH ? ORDER BY rowid", (match_expression([word]),)
        )
        return [self._rows[i] for (i,) in found]


_REQUIRED = {"id": str, "split": str, "kind": str, "history": list, "question": str, "answers": list, "page": str}


def load_questions(path: Path, pages: Sequence[RoamPage]) -> list[Case]:
    """The hand-written questions of a questions.jsonl (format: docs/notes.md, "Measuring
    chat"), each checked against pages: its page exists, its block and answer spans are
    in it. Errors name the file, the line and the field."""
    by_name = {p.name: p for p in pages}
    blocks = {name: page_blocks(p) for name, p in by_name.items()}
    cases = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            r = json.loads(line)
        except json.JSONDecodeError as exc:
            raise QuestionsError(f"{where}: not JSON ({exc.msg})") from None
        for key, kind in _REQUIRED.items():
            if not isinstance(r.get(key), kind):
                raise QuestionsError(f"{where}: {key}: expected {kind.__name__}, got {r.get(key)!r}")
        if r["kind"] not in KINDS:
            raise QuestionsError(f"{where}: kind: {r['kind']!r} is none of {', '.join(KINDS)}")
        case = Case(r["question"], r["answers"], r["kind"], r["page"], r["history"], split=r["split"], id=r["id"])
        if r["page"] and r["page"] not in by_name:
            raise QuestionsError(f"{where}: page: {r['page']!r} is not a page of the notes")
        if "block" in r:
            want = plain(r["block"])
            found = [(b.page, b.position) for b in blocks[r["page"]] if want in b.text]
            if not found:
                raise QuestionsError(f"{where}: block: {r['block']!r} is in no block of [{r['page']}]")
            case.blocks = found[:1]
        case.facts = list(r.get("facts", []))
        cases.append(case)
    return cases


def split_pages() -> tuple[list[RoamPage], list[RoamPage]]:
    """The notes' (train, validation) pages as the split stage wrote them."""
    return tuple(grounded.read_split_pages(paths.splits_dir() / f"roam_{s}.jsonl") for s in ("train", "val"))


def heldout_sets(train_pages: Sequence[RoamPage], val_pages: Sequence[RoamPage], seed: int) -> dict[str, list[Case]]:
    """The eval's held-out-phrasing sets (the answer probe keeps clear of them): questions
    about train pages, about validation pages, and follow-ups about either."""
    everything = [*train_pages, *val_pages]
    return {
        "heldout_train": heldout_cases(train_pages, HELDOUT_QUESTIONS, seed + EVAL_TRAIN_OFFSET, everything),
        "heldout_val": heldout_cases(val_pages, HELDOUT_QUESTIONS, seed + EVAL_VAL_OFFSET, everything),
        "heldout_followups": heldout_followups(everything, FOLLOWUP_QUESTIONS, seed + SeedOffset.HELDOUT_FOLLOWUPS),
    }


def unseen_notes() -> Path:
    return paths.root() / "data" / "unseen-notes"

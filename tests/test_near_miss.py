"""Near-miss training dialogues: a question for a key the asked page lacks, answered
"not in your notes" (bytechat/notes/dialogues/near_miss.py)."""

from __future__ import annotations

import random

from bytechat.eval import phrasings
from bytechat.notes import grounded
from bytechat.notes.blocks import all_blocks
from bytechat.notes.dialogues import asking, near_miss
from bytechat.notes.index import NotesIndex
from bytechat.notes.query import query_terms
from bytechat.notes.roam import RoamPage, load_pages
from bytechat.notes.synthetic import synthetic_pages
from bytechat.text.chat_format import parse_chat
from tests.conftest import REPO


def _make(pages, n, seed=0):
    blocks = all_blocks(pages)
    with NotesIndex.build(blocks) as index:
        retrieve = lambda question, k: [hit.block for hit in index.search(question, k)]  # noqa: E731
        return blocks, near_miss.make(blocks, retrieve, random.Random(seed), n, 3, 512)


def test_a_near_miss_asks_a_page_for_a_key_it_does_not_hold_and_abstains():
    pages = synthetic_pages(random.Random(1), 30) + load_pages(REPO / "examples" / "roam")
    blocks, made = _make(pages, 60)
    assert len(made) == 60
    misses = near_miss.NearMisses(blocks)
    page_text = {}
    for block in blocks:
        page_text.setdefault(block.page, []).append(block.text)
    for d in made:
        assert d.messages[-1] == {"role": "assistant", "content": grounded.ABSTAIN}
        assert parse_chat(d.document()) == d.messages  # laid out as chat lays it out
        question = d.messages[-2]["content"]
        asked = [k for k in misses.keys if f" {k} " in f" {question.lower()} " or f"{k}?" in question.lower()]
        assert asked, question
        page = next(p for p in misses.pages if asking.title(p) in question)
        held = {w for text in page_text[page] for w in query_terms(text)} | set(query_terms(asking.title(page)))
        # some key the question names shares no word with the page: the page cannot answer it
        assert any(not set(query_terms(k)) & held for k in asked), (question, page)


def test_near_misses_are_deterministic_and_never_ask_the_eval_s_absent_keys():
    pages = load_pages(REPO / "examples" / "roam")
    _, a = _make(pages, 40, seed=3)
    _, b = _make(pages, 40, seed=3)
    assert [d.messages for d in a] == [d.messages for d in b]
    for d in a:
        question = d.messages[-2]["content"].lower()
        assert not any(key in question for key in phrasings.ABSENT_KEYS), question
        assert not any(t.split("{")[0].lower() in question for t in phrasings.NEAR_MISS_TEMPLATES), question


def test_a_page_that_holds_every_key_gets_no_near_miss():
    page = RoamPage("Jonas", "- phone: 0612\n- birthday: 14 February\n", "Jonas.md")
    _, made = _make([page], 5)
    assert made == []

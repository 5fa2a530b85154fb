"""Near misses: a question for a fact the page does not hold, answered "not in your notes".

    system: Notes:
    [Jonas] Birthday: 14 February. Yes, really.
    [Jonas] phone: +31 6 1234 5678
    user: What's the locker code of Jonas?
    assistant: I couldn't find that in your notes.

Retrieval shows the page's blocks (they share the question's topic), so quoting the top
hit, as the search box does, answers with a block that does not say what was asked. The
model has the notes in front of it and can do better: these dialogues teach it to check
that a shown block holds what is asked before it quotes one. The key asked is an
attribute key (`key: value`) that at least two other pages of the same notes use
(`budget`, `author`, `birthday`) and none of whose words occurs anywhere on the asked page, so the notes really do not hold the answer; the
questions are the training attribute templates (asking.ATTRIBUTE_TEMPLATES), never
the eval's near-miss wording or keys (a test checks the keys on the example graph).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from bytechat.notes import grounded
from bytechat.notes.dialogues import asking
from bytechat.notes.blocks import NoteBlock
from bytechat.notes.dialogues.spans import KEY_VALUE
from bytechat.notes.query import query_terms


MIN_PAGES = 2  # a key asked of other pages is one at least this many pages use


class NearMisses:
    """The keys of a set of blocks, and per page the words it holds (to ask a page a key
    it lacks)."""

    def __init__(self, blocks: Sequence[NoteBlock]) -> None:
        self.page_words: dict[str, set[str]] = {}
        pages_with: dict[str, set[str]] = {}
        for block in blocks:
            words = self.page_words.setdefault(block.page, set(query_terms(asking.title(block.page))))
            words.update(query_terms(block.text))
            head = KEY_VALUE.match(block.text)  # an attribute: one `key: value` line
            if head and "\n" not in block.text and query_terms(head.group(1)):
                pages_with.setdefault(head.group(1).strip().lower(), set()).add(block.page)
        # a key several pages use is a kind of fact people keep (birthday, author, budget)
        self.keys = sorted(key for key, pages in pages_with.items() if len(pages) >= MIN_PAGES)
        self.pages = sorted(self.page_words)

    def question(self, rng: random.Random) -> tuple[str, str] | None:
        """(a question for a key the page lacks, the page), or None when the drawn page
        holds a word of every key."""
        page = rng.choice(self.pages)
        absent = [key for key in self.keys if not set(query_terms(key)) & self.page_words[page]]
        if not absent:
            return None
        template = rng.choice(asking.ATTRIBUTE_TEMPLATES)
        return template.format(key=rng.choice(absent), title=asking.title(page)), page


def make(
    blocks: Sequence[NoteBlock], retrieve: grounded.Retriever, rng: random.Random, n: int, k: int, context_bytes: int
) -> list[grounded.Dialogue]:
    """n near-miss dialogues about blocks' pages ([] when no page lacks a key of the others)."""
    misses = NearMisses(blocks)
    out: list[grounded.Dialogue] = []
    for _ in range(20 * n):  # a page may hold every key: draw again, a bounded number of times
        if len(out) == n or not misses.keys:
            break
        asked = misses.question(rng)
        if asked is not None:
            out.append(grounded.abstaining(asked[0], retrieve, k, context_bytes, "near_miss"))
    return out

"""Page summaries: "tell me about X" answered with what the notes shown hold about X.

The page's blocks in the notes (retrieval shows a page's most informative blocks for a
question that names it, tags-only ones last) are said one short item each, in page
order, at most MAX_ITEMS: an attribute as `key: value` (a long value cut to its first
clause), a block with a short header line as "header: its first child's first clause",
any other block as its first clause. Blocks that only tag the page are left out while
there is anything else. Every item copies its words from the block.

    Your Sourdough Starter notes, in short:
    - name: Gus
    - Feeding: Ratio 1:1:1 by weight: 50 g starter, 50 g flour, 50 g water
"""

from __future__ import annotations

import random
from typing import Sequence

from bytechat.notes.blocks import ANSWER_PREFIX, NoteBlock, is_tags_only
from bytechat.notes.dialogues.frames import Said, _pick, key_words, title_fields
from bytechat.notes.dialogues.spans import attribute, clause, ended

MAX_ITEMS = 4
ITEM_BYTES = 56  # an item's clause is cut at a clause boundary before this
VALUE_BYTES = 48  # an attribute's value is said whole up to this

LISTS = (
    ("name", "{Notes}, in short:\n{items}"),
    ("name", "Here's what {notes} say:\n{items}"),
    ("name", "{Notes} cover:\n{items}"),
    ("value", "{items}\nThat's the gist of {page}."),
)
SENTENCES = (
    ("name", "From {page}: {items}"),  # not "On your X page:", a framed quote's opening (copying.FRAMES)
    ("name", "In short, {notes} say: {items}"),
    ("value", "{items} That's from {page}."),
)
# Training questions about a page as a whole (beside asking.PAGE_TEMPLATES).
SUMMARY_QUESTIONS = (
    "What do I know about {title}?",
    "Give me a summary of {title}.",
    "Quick summary of my {title} notes?",
    "What have I got on {title}?",
)


def item(block: NoteBlock) -> tuple[str, tuple[str, ...]]:
    """(one summary item for a block, the pieces it copied from it)."""
    kv = attribute(block.text)
    if kv:
        key, value = kv
        said = value if len(value.encode("utf-8")) <= VALUE_BYTES else clause(value, ITEM_BYTES)
        shown = key_words(key)
        pieces = (said,) if shown != key else (key, said)
        return f"{shown}: {said}", pieces
    lines = [line.strip() for line in block.text.split("\n") if line.strip()]
    head = lines[0]
    if len(lines) > 1 and len(head) <= 40 and ":" not in head and not head.startswith("TODO "):
        child = clause(lines[1], ITEM_BYTES)
        return f"{head}: {child}", (head, child)
    first = clause(head, ITEM_BYTES)
    return first, (first,)


def chosen(page: str, shown: Sequence[NoteBlock]) -> list[NoteBlock]:
    """The page's blocks among those shown, in page order, tags-only ones only if there
    is nothing else, at most MAX_ITEMS."""
    own = sorted((b for b in shown if b.page == page), key=lambda b: b.position)
    telling = [b for b in own if not is_tags_only(b.text)]
    return (telling or own)[:MAX_ITEMS]


def summary_reply(title: str, blocks: Sequence[NoteBlock], rng: random.Random, room: int | None = None) -> Said:
    """A few short items about blocks (one page's, in order), as a list or in sentences.
    When the reply is longer than room bytes the shortest frame is used, then items are
    dropped from the end (one stays)."""
    items = [item(b) for b in blocks]
    frames = LISTS if rng.random() < 0.6 else SENTENCES
    template = _pick(rng, frames)
    while True:
        text = _render(template, title, items, frames is LISTS)
        if room is None or len(text.encode("utf-8")) <= room:
            break
        shortest = min((t for _, t in frames), key=len)
        if template != shortest:
            template = shortest
        elif len(items) > 1:
            items = items[:-1]
        else:
            break
    spans = tuple(p for _, pieces in items for p in pieces)
    if frames is SENTENCES:  # a sentence starts with a capital: the copied piece is the rest
        spans = tuple(p[1:] if p[:1].islower() else p for p in spans)
    return Said(text, spans)


def quotes(blocks: Sequence[NoteBlock], room: int | None = None) -> Said:
    """A page's blocks quoted whole, one `From [Page] ...` after another (page order), as
    `grounded.answers: quote` answers "tell me about X": the page's facts, each copied
    verbatim (faithful decoding keeps every quote exact). Quotes are dropped from the end
    while the reply is longer than room bytes (one stays)."""
    said = [f"{ANSWER_PREFIX}{b.render()}" for b in blocks]
    while len(said) > 1 and room is not None and len("\n".join(said).encode("utf-8")) > room:
        said.pop()
    return Said("\n".join(said), tuple(b.text for b in blocks[: len(said)]))


def _render(template: str, title: str, items: list[tuple[str, tuple[str, ...]]], as_list: bool) -> str:
    if as_list:
        body = "\n".join(f"- {text}" for text, _ in items)
    else:
        body = " ".join(ended(text[0].upper() + text[1:]) for text, _ in items)
    return template.format(**title_fields(title), items=body)

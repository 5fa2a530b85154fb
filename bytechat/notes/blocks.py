"""Note blocks and the notes layout that training dialogues and chat share.

A Roam page is cut into blocks: a top-level bullet with its children (a page of any
notes format comes as Roam markdown: bytechat/notes/readers/). Roam markup is
turned into plain text (`{{[[TODO]]}}` -> `TODO`, `[[Page]]` -> `Page`, `**b**` -> `b`,
`key:: value` -> `key: value`), bullet markers are dropped and each child level is
indented by two spaces. Children share a block while it stays within GROUP_BYTES; past
that the block is cut at child boundaries, each child block starting with the parent's
first line (shortened), and a line too long for MAX_BLOCK_BYTES is cut at spaces, so no
word is lost to retrieval and every block still reads on its own. Short blocks matter:
the model quotes the block it answers from, its quotes go wrong more often the longer
they are, and a quote of the one line that answers says the fact with fewer words
around it (docs/notes.md).

The notes go into the system turn, one block per entry, the best match last (closest
to the question, so the model copies from nearby):

    Notes:
    [Garden/Tomatoes] Varieties: San Marzano, Sungold
    [Sourdough Starter] Feeding
      Ratio 1:1:1 by weight

`render_notes([])` is "Notes: none found." (retrieval ran and found nothing).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from bytechat.notes.readers.model import outline_lines
from bytechat.notes.roam import RoamPage

MAX_BLOCK_BYTES = 150  # one block's text; longer blocks are cut (see above)
GROUP_BYTES = 100  # children share a block while it stays this short (docs/notes.md, "Blocks")
NOTES_HEADER = "Notes:"
ANSWER_PREFIX = "From "  # a quote of a note: `From [Page] block text` (grounded.answer)
NO_NOTES = "Notes: none found."

_TODO = re.compile(r"\{\{\[\[(TODO|DONE)\]\]\}\}\s*")
# An open task in a block's plain text (after plain(): "TODO buy flour"), the one pattern
# the index's key column, the training questions and the answer spans all use.
TODO_LINE = re.compile(r"^\s*TODO (.+)$", re.MULTILINE)
_MACRO = re.compile(r"\{\{[^{}]*\}\}")
_TAG_LINK = re.compile(r"#\[\[([^\[\]]+)\]\]")
_LINK = re.compile(r"\[\[([^\[\]]+)\]\]")
_BLOCK_REF = re.compile(r"\s*\(\([A-Za-z0-9_-]{6,}\)\)")
_BOLD = re.compile(r"(\*\*|__|\^\^)(.+?)\1")
_ATTRIBUTE = re.compile(r"^([^\s:][^:]{0,40})::\s*")


@dataclass(frozen=True)
class NoteBlock:
    page: str  # the page name, e.g. "Garden/Tomatoes"
    text: str  # plain text, children indented by two spaces per level
    position: int  # index of the block within its page
    # Where the block came from, for a link back to it; empty when not known. Equality
    # stays (page, text, position): the same block read from the index is equal.
    uid: str = field(default="", compare=False)  # Roam block uid, Logseq id:: uuid, Obsidian ^block-id
    source: str = field(default="", compare=False)  # the file, relative to the notes folder
    line: int = field(default=0, compare=False)  # 1-based line it starts on in that file (0: none)
    heading: str = field(default="", compare=False)  # the heading it is under (markdown notes)

    def render(self) -> str:
        return f"[{self.page}] {self.text}"


def plain(line: str) -> str:
    """One line of Roam markdown as plain text."""
    line = _TODO.sub(lambda m: f"{m.group(1)} ", line)
    line = _MACRO.sub("", line)
    line = _LINK.sub(r"\1", _TAG_LINK.sub(r"#\1", line))
    line = _BLOCK_REF.sub("", _BOLD.sub(r"\2", line))
    return _ATTRIBUTE.sub(r"\1: ", line).strip()


def _outline(text: str) -> tuple[list[tuple[int, int, str]], list[int]]:
    """([(top-level block number, depth, plain text)] for each non-empty line of a page,
    [the line each top-level block starts on]). Depth comes from a stack of indents, so
    2- and 4-space exports both work (readers.model.outline_lines)."""
    rows, tops = [], []
    for number, depth, body in outline_lines(text):
        if depth == 0:
            tops.append(number)
        body = plain(body)
        if body:
            rows.append((max(len(tops) - 1, 0), depth, body))
    return rows, tops


def _clip(text: str, limit: int) -> str:
    """text cut to at most limit UTF-8 bytes on a character boundary, marked with an ellipsis."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: limit - 3].decode("utf-8", errors="ignore").rstrip() + "…"


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def _greedy(words: list[str], width: int) -> list[str]:
    """words filled into pieces of at most width UTF-8 bytes (a longer word is cut)."""
    pieces, current = [], ""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if _size(candidate) <= width:
            current = candidate
            continue
        if current:
            pieces.append(current)
        while _size(word) > width:
            cut = word.encode("utf-8")[:width].decode("utf-8", errors="ignore")
            pieces.append(cut)
            word = word[len(cut) :]
        current = word
    return [*pieces, current] if current else pieces


def _wrap(line: str, limit: int) -> list[str]:
    """line in pieces of at most limit UTF-8 bytes, each keeping line's indent: as few
    pieces as fit, of about equal size (no 6-byte tail that says nothing on its own),
    cut at spaces, and inside a word only when the word alone is longer than a piece."""
    body = line.lstrip(" ")
    indent = line[: len(line) - len(body)]
    room = max(8, limit - len(indent))
    pieces = _greedy(body.split(), room)
    # The narrowest width that still needs no more pieces evens them out.
    for width in range(-(-_size(body) // max(1, len(pieces))), room):
        even = _greedy(body.split(), width)
        if len(even) <= len(pieces):
            pieces = even
            break
    return [indent + piece for piece in pieces]


def _child_pieces(lines: list[str], room: int) -> list[str]:
    """The lines under a block's first line, as the pieces a block is cut between: a child
    with the lines under it where they fit in room bytes ("DONE book the ferry" keeps its
    "nested detail"), else each of its lines, wrapped to fit."""
    units: list[list[str]] = []
    for line in lines:
        if units and line.startswith("    "):  # deeper than a child: part of the last child
            units[-1].append(line)
        else:
            units.append([line])
    pieces = []
    for unit in units:
        whole = "\n".join(unit)
        pieces += [whole] if _size(whole) <= room else [p for line in unit for p in _wrap(line, room)]
    return pieces


def _origin(page: RoamPage, top_lines: list[int]):
    """block number -> (uid, source, line, heading) of each top-level block of the page:
    from the reader's block tree (each of its top-level Blocks is one top-level outline
    block of the text), else, for a page read from a file of Roam markdown, the file and
    the line of its text; nothing for a page made in code."""
    source = getattr(page, "source", "")
    tops = getattr(page, "blocks", ())
    if tops and len(tops) == len(top_lines):

        def origin(n: int) -> tuple[str, str, int, str]:
            top = tops[n]
            return top.uid, source, top.line, plain(top.string.partition("\n")[0]) if top.heading else ""

        return origin
    if source and not tops and getattr(page, "format", "") == "roam-markdown":  # its text is its file
        return lambda n: ("", source, top_lines[n], "")
    return lambda n: ("", source, 0, "")


def _note(page: str, blocks: list[NoteBlock], text: str, **origin) -> NoteBlock:
    return NoteBlock(page, text, len(blocks), **origin)


def page_blocks(page: RoamPage, max_bytes: int = MAX_BLOCK_BYTES) -> list[NoteBlock]:
    """The page's blocks in page order (see the module docstring), each with the uid,
    file, line and heading of the top-level block it is cut from, where known."""
    grouped: dict[int, list[str]] = {}
    rows, top_lines = _outline(page.text)
    for block, depth, body in rows:
        grouped.setdefault(block, []).append("  " * depth + body)
    origin = _origin(page, top_lines)
    blocks: list[NoteBlock] = []
    for number, lines in grouped.items():
        uid, source, line, heading = origin(number)
        note = functools.partial(_note, page.name, blocks, uid=uid, source=source, line=line, heading=heading)

        # The first line may itself take several blocks; each child block starts with
        # it (shortened), so that it still says what it is part of.
        first, *more = _wrap(lines[0], max_bytes)
        lead = _clip(lines[0], max_bytes // 3)
        current = first
        pieces = [*more, *_child_pieces(lines[1:], max_bytes - _size(lead) - 1)]
        for i, piece in enumerate(pieces):
            candidate = f"{current}\n{piece}"
            if _size(candidate) > min(GROUP_BYTES, max_bytes):
                blocks.append(note(current))
                candidate = piece if i < len(more) else f"{lead}\n{piece}"
            current = candidate
        blocks.append(note(current))
    return blocks


_TAGS_ONLY = re.compile(r"^[^\n:]{1,40}: (#\S+\s*)+$")


def is_tags_only(text: str) -> bool:
    """A block that only files its page under tags (`type: #person #work`): Roam pages
    often start with one, and it answers nothing a person asks about the page."""
    return bool(_TAGS_ONLY.match(text))


def lead_blocks(blocks: Iterable[NoteBlock]) -> set[tuple[str, int]]:
    """(page, position) of each page's lead block: its first block that is not tags only
    (its first block when all are). What "tell me about <page>" is answered with."""
    leads: dict[str, tuple[int, int]] = {}
    for b in blocks:
        rank = (is_tags_only(b.text), b.position)
        if b.page not in leads or rank < leads[b.page]:
            leads[b.page] = rank
    return {(page, position) for page, (_, position) in leads.items()}


def all_blocks(pages: Iterable[RoamPage], max_bytes: int = MAX_BLOCK_BYTES) -> list[NoteBlock]:
    return [block for page in pages for block in page_blocks(page, max_bytes)]


def render_notes(blocks: Sequence[NoteBlock]) -> str:
    """The notes part of the system turn; blocks best-first in, best placed last."""
    if not blocks:
        return NO_NOTES
    return "\n".join([NOTES_HEADER, *(b.render() for b in reversed(blocks))])


def notes_system_content(notes: str | None, system: str | None = None) -> str | None:
    """The system turn: a person's own system prompt first, then the notes."""
    parts = [part for part in (system, notes) if part]
    return "\n".join(parts) if parts else None

"""The page model every notes reader yields, and the Roam-markdown text made from it.

A Page is a title and a tree of Blocks. Each reader fills in what its format has: a uid
(Roam JSON, Logseq `id::`, an Obsidian `^block-id`), the file and line a block starts
on, create/edit times (Roam JSON, in ms since the epoch), a heading level, attributes,
the pages it links to and the blocks it references.

Whatever the format, `Page.text` is the page as Roam's markdown export lays it out
(`- ` bullets, four spaces per level, the block strings in Roam markup), so the blocks,
the training streams and the index see one text format. Each top-level Block is exactly
one top-level outline block of that text (`outline_lines` depth 0), which is how
bytechat.notes.blocks.page_blocks gives each NoteBlock its block's uid, file and line.
"""

from __future__ import annotations

import calendar
import re
import sys
from dataclasses import dataclass, field
from typing import Iterable, Iterator

MAX_DEPTH = 8  # deeper levels are read as this one (as blocks.page_blocks always has)


def day_title(year: int, month: int, day: int) -> str:
    """Roam's daily-page title, which a day's page has in every format: "December 2nd, 2026"."""
    suffix = "th" if 11 <= day % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(day % 10, "th")
    return f"{calendar.month_name[month]} {day}{suffix}, {year}"


class NotesError(ValueError):
    """Notes that cannot be read: one line naming the file (bytechat.notes.roam.RoamError)."""


@dataclass(frozen=True)
class Block:
    string: str  # the block's text in Roam markup; may hold newlines
    children: tuple[Block, ...] = ()
    uid: str = ""  # Roam uid, Logseq `id::` uuid, Obsidian `^block-id`; "" when the format has none
    line: int = 0  # 1-based line of its file where it starts; 0 when not from a line-based file
    heading: int = 0  # heading level (Roam 1-3, markdown 1-6); 0 for a plain block
    created: int | None = None  # ms since the epoch (Roam JSON `create-time`)
    edited: int | None = None  # ms since the epoch (Roam JSON `edit-time`)
    attributes: tuple[tuple[str, str], ...] = ()  # block properties (Logseq `key:: value`)
    refs: tuple[str, ...] = ()  # uids of the blocks it references: ((uid))
    links: tuple[str, ...] = ()  # titles of the pages it links: [[Page]], #tag, #[[Tag]]


@dataclass(frozen=True)
class Page:
    """One page. Equality and hashing are by (name, text), as before the readers."""

    name: str  # the title; Roam markdown and plain markdown: the relative path less ".md"
    text: str  # Roam-markdown text (see the module docstring)
    blocks: tuple[Block, ...] = field(default=(), compare=False)
    uid: str = field(default="", compare=False)
    source: str = field(default="", compare=False)  # the file it was read from, relative to the notes folder
    format: str = field(default="", compare=False)  # the reader: roam-markdown, roam-json, logseq, markdown
    created: int | None = field(default=None, compare=False)
    edited: int | None = field(default=None, compare=False)
    attributes: tuple[tuple[str, str], ...] = field(default=(), compare=False)
    links: tuple[str, ...] = field(default=(), compare=False)

    @property
    def title(self) -> str:
        return self.name

    def tree(self) -> tuple[Block, ...]:
        """The page's blocks: the reader's, else those of its Roam-markdown text."""
        if self.blocks or not self.text.strip():
            return self.blocks
        from bytechat.notes.readers.roam_markdown import blocks_of

        return blocks_of(self.text)

    @property
    def refs(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(uid for block in walk(self.tree()) for uid in block.refs))

    def document(self) -> str:
        """What the model trains on: the page title, then its markdown."""
        return f"{self.name}\n{self.text.rstrip()}"

    @classmethod
    def from_blocks(cls, name: str, blocks: Iterable[Block], **meta) -> Page:
        """A page whose text is rendered from its blocks; links gathered from them."""
        blocks = tuple(blocks)
        links = meta.pop("links", ())
        links = tuple(dict.fromkeys([*links, *(link for b in walk(blocks) for link in b.links)]))
        return cls(name, render(blocks), blocks, links=links, **meta)


def walk(blocks: Iterable[Block]) -> Iterator[Block]:
    """Every block of a tree, depth first, in page order."""
    for block in blocks:
        yield block
        yield from walk(block.children)


def render(blocks: Iterable[Block], depth: int = 0) -> str:
    """Blocks as Roam's markdown export writes them: `- string`, four spaces a level. A
    string's further lines go at its children's indent, without a bullet, so they read as
    part of the block and never start a top-level block of their own."""
    lines: list[str] = []
    _render(blocks, min(depth, MAX_DEPTH), lines)
    return "\n".join(lines) + ("\n" if lines else "")


def _render(blocks: Iterable[Block], depth: int, lines: list[str]) -> None:
    for block in blocks:
        first, *rest = block.string.split("\n")
        lines.append("    " * depth + "- " + first.strip())
        lines.extend("    " * (depth + 1) + line.strip() for line in rest if line.strip())
        _render(block.children, depth + 1, lines)


_BULLET = re.compile(r"^(\s*)(?:[-*+]\s+|\d+\.\s+)?(.*)$")


def outline_lines(text: str) -> Iterator[tuple[int, int, str]]:
    """(1-based line number, depth, body) for each non-blank line of Roam-markdown text,
    the bullet marker taken off. Depth comes from a stack of indents, so 2- and 4-space
    exports both work; it is at most MAX_DEPTH."""
    indents: list[int] = []
    for number, raw in enumerate(text.split("\n"), 1):
        if not raw.strip():
            continue
        indent_str, body = _BULLET.match(raw.expandtabs(4)).groups()
        indent = len(indent_str)
        while indents and indents[-1] > indent:
            indents.pop()
        if not indents or indents[-1] < indent:
            indents.append(indent)
        yield number, min(len(indents) - 1, MAX_DEPTH), body


@dataclass
class Draft:
    """A Block being built (readers fill these in, then freeze them)."""

    string: str
    line: int = 0
    uid: str = ""
    heading: int = 0
    created: int | None = None
    edited: int | None = None
    attributes: list[tuple[str, str]] = field(default_factory=list)
    children: list[Draft] = field(default_factory=list)
    refs: list[str] | None = None  # None: the ((uid)) in string
    links: list[str] | None = None  # None: the [[links]] and #tags in string

    def freeze(self) -> Block:
        return Block(
            self.string,
            tuple(child.freeze() for child in self.children),
            uid=self.uid,
            line=self.line,
            heading=self.heading,
            created=self.created,
            edited=self.edited,
            attributes=tuple(self.attributes),
            refs=tuple(refs_in(self.string) if self.refs is None else self.refs),
            links=tuple(links_in(self.string) if self.links is None else self.links),
        )


def tree(rows: Iterable[tuple[int, Draft]]) -> list[Draft]:
    """Drafts given with their depth (each at most one deeper than the row before) as a tree."""
    roots: list[Draft] = []
    parents: list[Draft] = []
    for depth, draft in rows:
        depth = min(depth, len(parents))
        del parents[depth:]
        (parents[-1].children if parents else roots).append(draft)
        parents.append(draft)
    return roots


# Roam markup the readers look into (blocks.plain turns it into plain text later).
LINK = re.compile(r"#?\[\[([^\[\]]+)\]\]|(?<![\w#&/])#([^\s\[\],.;:!?()\"'#]+)")
BLOCK_REF = re.compile(r"\(\(([A-Za-z0-9_-]{6,})\)\)")


def links_in(string: str) -> list[str]:
    """Titles of the pages a string links to: [[Page]], #[[Page]], #tag (not the
    {{[[TODO]]}} / {{[[DONE]]}} markers)."""
    if "[[" not in string and "#" not in string:
        return []
    found = (m.group(1) or m.group(2) for m in LINK.finditer(string))
    return list(dict.fromkeys(link for link in found if link not in ("TODO", "DONE")))


def refs_in(string: str) -> list[str]:
    """uids of the blocks a string references: ((uid))."""
    if "((" not in string:
        return []
    return list(dict.fromkeys(BLOCK_REF.findall(string)))


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr)

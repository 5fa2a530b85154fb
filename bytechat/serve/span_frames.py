"""Faithful decoding for a model taught span answers (`grounded.answers: span`).

Such a model answers in sentences of its own making: a frame from the templates that wrote
its training dialogues (bytechat.notes.dialogues.frames and .summary) with what it copies
from the notes in the frame's slots: "It's 14 February, according to your Jonas notes.",
"Gus: that's the name on your Sourdough Starter page.", "- name: Gus\\n- Feeding: Ratio
1:1:1\\nThat's the gist of your Sourdough Starter page." Decoded freely at the smoke size
the frames come out right and the copies do not: a page name misspelt inside its own frame
("your The Dispessed page"), two blocks spliced, a loop (docs/notes.md, "Span answers at the
smoke size, again"). SpanFrames keeps such a reply to what it was taught, byte by byte:

- its words outside the slots are one of the frames' (the templates of frames.STYLE, as
  the dialogues pick them, and each family's shortest, for a reply short of room; each
  slot's fixed choices spelled out: "on "/"in " before a date, "is"/"are", "your X
  notes"/"your notes on X");
- a page's slot holds a shown page's whole name (or its last part, as a person names
  it: "Miso Soup" for "Recipes/Miso Soup"), a key's a line's start up to its ": ", a
  header's a whole line; any other slot a copy: a run of whole words of one line of a
  shown block; a copy's or key's first letter in either case (frames capitalise a
  sentence's first word, and say a key in lower case);
- the reply may end only where a frame ends.

The model still chooses the frame, which block and line it copies and how much: the
machine only rules out what no template could have written. It holds no model state: it
reads the reply so far (extending the last one it read, as decoding does), so one machine
per reply, as FaithfulCopy.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING

from bytechat.notes.dialogues import frames, summary
from bytechat.notes.dialogues.asking import title
from bytechat.text.chat_format import tag_continuations

if TYPE_CHECKING:
    from bytechat.serve.copying import FaithfulCopy

COPY = 0x01  # a slot in a frame's bytes: a copy from the notes goes here
NAME = 0x02  # a slot for a page's name: a shown page's whole name goes here
SENTENCE = 0x03  # a copy that ends a sentence itself ("Lives in Porto with Rui.")
KEY = 0x04  # an attribute's key: a line's start up to its ": " ("birthday" of "Birthday: 14 February")
HEAD = 0x05  # a block's header: a whole line ("Feeding")
_SENTENCE_ENDS = tuple(e.encode("utf-8") for e in (".", "!", "?", "…", '"', "”"))  # spans.ended
_SLOT = re.compile(r"\{(\w+)\}")
_TAGS_START = 0x0A  # "\n": a stop tag's first byte
MAX_ITEMS = summary.MAX_ITEMS
MAX_COPY = 240  # bytes: no span, item or sentence the frames copy is longer


# ------------------------------------------------------------------ the frames, spelled out

_C, _N, _S, _K, _H = "\x01", "\x02", "\x03", "\x04", "\x05"
# Each slot's choices: a copy, a page's name, or the fixed words it may be.
_NAMED = {
    "title": (_N,),
    "key": (_K,),
    "head": (_H,),
    "notes": ("your " + _N + " notes", "your notes on " + _N),
    "Notes": ("Your " + _N + " notes", "Your notes on " + _N),
    "page": ("your " + _N + " page", "your page on " + _N),
    "Page": ("Your " + _N + " page", "Your page on " + _N),
    "owner": (_N + "'s", _N + "'"),
    "your": ("", "your "),
    "pre": ("", "on ", "in "),
    "Pre": ("", "On ", "In "),
    "is": ("is", "are"),
    "count": (_C, *frames.NUMBERS.values()),
    "sentence": (_C + ".", _S),  # spans.ended: a full stop added where the copy has none
    "todo": (_C + ".", _S),
}
_LIST_ITEM = ("- " + _C, "- " + _C + ": " + _C)
_SENTENCE_ITEM = (_C + ".", _S, _C + ": " + _C + ".", _C + ": " + _S)  # spans.ended: each a sentence


def _items(as_list: bool) -> list[str]:
    """{items}: one to MAX_ITEMS summary items, one per line ("- x") or in sentences."""
    one, sep = (_LIST_ITEM, "\n") if as_list else (_SENTENCE_ITEM, " ")
    out = []
    for n in range(1, MAX_ITEMS + 1):
        out += [sep.join(parts) for parts in itertools.product(one, repeat=n)]
    return out


def _todo_items() -> list[str]:
    return ["\n".join(["- " + _C] * n) for n in range(2, MAX_ITEMS + 1)]


def spelled(template: str, items: Sequence[str] = ()) -> list[str]:
    """Every way template can be written: a copy slot as "\\x01", a page's name as
    "\\x02", a copy that ends its own sentence as "\\x03", a key as "\\x04", a header as
    "\\x05"."""
    parts = _SLOT.split(template)  # literal, slot, literal, slot, ...
    choices = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            choices.append((part,))
        elif part == "items":
            choices.append(tuple(items))
        else:
            choices.append(_NAMED.get(part, (_C,)))
    return ["".join(c) for c in itertools.product(*choices)]


def _taught(family) -> list[str]:
    """The templates of a family the dialogues write: those of frames.STYLE (frames._pick)."""
    if frames.STYLE == "value1":
        return [next((t for tag, t in family if tag == "value"), family[0][1])]
    return [t for tag, t in family if frames.STYLE == "mixed" or tag == frames.STYLE] or [t for _, t in family]


@lru_cache(maxsize=1)
def skeletons() -> tuple[bytes, ...]:
    """Every frame the span dialogues write, spelled out (see the module docstring): the
    templates of frames.STYLE, and the shortest of each family, which a reply too long for
    its room falls back to (frames._shortest)."""
    single = [
        frames.WHAT,
        frames.WHEN_NOUN,
        frames.WHEN_VERB,
        frames.BORN,
        frames.SINCE,
        frames.COUNT,
        frames.COUNT_VERB,
        frames.WHO,
        frames.BY,
        frames.WHERE,
        frames.LIVES,
        frames.RELATION,
        frames.TODO_ONE,
        frames.GIST,
        frames.GIST_UNDER,
        (("name", "{title} is {span}."),),  # a relation said whole ("Priya is my manager")
    ]
    out: set[str] = set()
    for family in single:
        for template in {*_taught(family), min((t for _, t in family), key=len)}:
            for text in spelled(template):
                out.add(text)
                if family not in (frames.TODO_ONE, frames.GIST, frames.GIST_UNDER):
                    out.update(yes + text for yes in frames.YES)  # a yes/no question's answer
    for template in _taught(frames.TODO_MANY):
        out.update(spelled(template, _todo_items()))
    for family, as_list in ((summary.LISTS, True), (summary.SENTENCES, False)):
        for template in {*_taught(family), min((t for _, t in family), key=len)}:
            out.update(spelled(template, _items(as_list)))
    # "{your}" opening a sentence is said "Your": frames.attribute_reply capitalises it.
    out.update("Y" + s[1:] for s in list(out) if s.startswith("your "))
    return tuple(sorted(s.encode("utf-8") for s in out))


# ------------------------------------------------------------------ the machine


def _word_byte(b: int) -> bool:
    return b >= 0x80 or chr(b).isalnum()


def _other_case(b: int) -> int:
    return ord(chr(b).swapcase()) if b < 0x80 and chr(b).isalpha() else b


class SpanFrames:
    """Which next bytes keep a reply one of `skeletons` with copies of `lines` in its copy
    slots and one of `names` in its name slots (the shown blocks' lines and pages' names,
    as bytes). allowed(produced) is the sorted byte values the reply may go on with, or
    None once it is no such reply."""

    may_loop = True  # a frame may copy the same words again: decoding keeps the repeat guard on

    def __init__(self, lines: Sequence[bytes], names: Sequence[bytes]):
        self.frames = list(skeletons())
        lines = [s for s in dict.fromkeys(lines) if s]
        # Where a copy may start (each line's word starts) and a name (a name's start).
        words = [(s, i) for s in lines for i in range(len(s)) if _starts_word(s, i)]
        heads = [(s, 0) for s in lines]
        keys = [(s, 0) for s in lines if b": " in s]
        self.starts = {COPY: words, SENTENCE: words, KEY: keys, HEAD: heads}
        self.starts[NAME] = [(s, 0) for s in dict.fromkeys(names) if s]
        # A frame with a slot nothing shown can fill (a key where no line has one) is no
        # reply: left in, it is a dead end, and a dead end leaves the reply unconstrained.
        empty = {kind for kind, at in self.starts.items() if not at}
        self.frames = [f for f in self.frames if not empty.intersection(f)]
        self.openers = {kind: {b for s, i in at for b in _cases(s[i], kind)} for kind, at in self.starts.items()}
        self._memo: dict[tuple[int, bytes], tuple[bool, bool, frozenset[int]]] = {}
        self._whole_at: dict[bytes, bool] = {}
        self._read, self._states = b"", self._initial()

    def allowed(self, produced: bytes | bytearray) -> list[int] | None:
        reply = bytes(produced)
        nexts: set[int] = set()
        for f, pos, start in self._advance(reply):
            nexts |= self._next_bytes(reply, f, pos, start)
        cut = reply.rfind(b"\n")  # a stop tag being written after a whole frame: "...notes.\nus"
        if cut >= 0:
            tail = reply[cut:]
            tags = tag_continuations(tail)
            if tags and self._ends(reply[:cut]):
                nexts |= tags
        return sorted(nexts) if nexts else None

    # -- reading the reply

    def _initial(self) -> set[tuple[int, int, int]]:
        return {(f, 0, -1) for f in range(len(self.frames))}  # (frame, position, slot's start or -1)

    def _advance(self, reply: bytes) -> set[tuple[int, int, int]]:
        if not reply.startswith(self._read):  # not an extension of what was read: start over
            self._read, self._states = b"", self._initial()
        states = self._states
        for n in range(len(self._read), len(reply)):
            states = self._step(reply, n, states)
        self._read, self._states = reply, states
        return states

    def _step(self, reply: bytes, n: int, states) -> set[tuple[int, int, int]]:
        """The states after reply[n], from those before it."""
        b = reply[n]
        out = set()
        for f, pos, start in states:
            frame = self.frames[f]
            if pos == len(frame):
                continue
            kind = frame[pos]
            if start < 0:
                if kind == b:
                    out.add((f, pos + 1, -1))
                elif kind in self.starts and self._copy(kind, reply[n : n + 1])[0]:
                    out.add((f, pos, n))
                continue
            copied = reply[start:n]
            if len(copied) < MAX_COPY and self._copy(kind, copied + reply[n : n + 1])[0]:
                out.add((f, pos, start))
            if pos + 1 < len(frame) and frame[pos + 1] == b and self._copy(kind, copied)[1] and _joins(copied, b):
                out.add((f, pos + 2, -1))
        return out

    def _next_bytes(self, reply: bytes, f: int, pos: int, start: int) -> set[int]:
        frame = self.frames[f]
        if pos == len(frame):
            return {_TAGS_START}
        kind = frame[pos]
        if start < 0:
            return self.openers[kind] if kind in self.starts else {kind}
        _, whole, nexts = self._copy(kind, reply[start:])
        out = set(nexts) if len(reply) - start < MAX_COPY else set()
        if whole and (pos + 1 == len(frame) or _joins(reply[start:], frame[pos + 1])):
            out.add(frame[pos + 1] if pos + 1 < len(frame) else _TAGS_START)
        return out

    def _ends(self, body: bytes) -> bool:
        """Whether body is a whole frame with its slots filled."""
        if body not in self._whole_at:
            states = self._initial()
            for n in range(len(body)):
                states = self._step(body, n, states)
            self._whole_at[body] = any(
                pos == len(self.frames[f])
                or (start >= 0 and pos == len(self.frames[f]) - 1 and self._copy(self.frames[f][pos], body[start:])[1])
                for f, pos, start in states
            )
        return self._whole_at[body]

    # -- what fills a slot

    def _copy(self, kind: int, copied: bytes) -> tuple[bool, bool, frozenset[int]]:
        """(whether copied can begin what fills a slot of kind: a run of a line from one of
        its word starts, its first letter in either case, or the start of a page's name;
        whether it is whole: ends where a word ends, or is the whole name; the bytes that
        may follow it)."""
        key = (kind, copied)
        if key not in self._memo:
            ends = [] if b"\n" in copied else list(self._occurrences(kind, copied))
            if kind == KEY:  # a key ends at its line's first ": "
                ends = [(s, e) for s, e in ends if e <= s.find(b": ")]
            if kind in (NAME, HEAD):
                whole = any(e == len(s) for s, e in ends)
            elif kind == KEY:
                whole = any(s.startswith(b": ", e) for s, e in ends)
            else:
                whole = not copied.endswith(b" ") and any(e == len(s) or not _word_byte(s[e]) for s, e in ends)
                whole = whole and (kind != SENTENCE or copied.endswith(_SENTENCE_ENDS))
            room = [(s, e) for s, e in ends if e < (s.find(b": ") if kind == KEY else len(s))]
            self._memo[key] = (bool(ends), whole, frozenset(s[e] for s, e in room))
        return self._memo[key]

    def _occurrences(self, kind: int, copied: bytes):
        first, rest = copied[0], copied[1:]
        for s, i in self.starts[kind]:
            if first in _cases(s[i], kind) and s.startswith(rest, i + 1):
                yield s, i + len(copied)


def _joins(copied: bytes, b: int) -> bool:
    """Whether a frame's next byte b may follow copied: not a second mark after the copy's
    own ("...my door., according to")."""
    return not (copied[-1:] in (b".", b",", b";", b":") and b in b".,;:")


def _cases(b: int, kind: int) -> tuple[int, ...]:
    """The bytes a slot of kind may open with where its source has b: a copy's first
    letter in either case (a sentence's first word, a key said in lower case), a name's as
    it is written."""
    return (b,) if kind in (NAME, HEAD) else (b, _other_case(b))


def _starts_word(s: bytes, i: int) -> bool:
    """Whether a copy may start at s[i]: not a space, a closing mark or inside a UTF-8
    character, and not after a letter or digit (a copy is whole words)."""
    if 0x80 <= s[i] < 0xC0 or s[i] in b" ,.;:!?)]}":
        return False
    return i == 0 or not _word_byte(s[i - 1])


def sources_of(entries: Sequence[str]) -> tuple[list[bytes], list[bytes]]:
    """What a span answer may copy from shown entries (`[Page] text`, child lines
    indented): each line of the blocks, stripped, and each page's name, whole or as a
    person names it (asking.title, as the frames say it)."""
    lines, names = [], []
    for entry in entries:
        page, _, text = entry[1:].partition("] ")
        names += [page.encode("utf-8"), title(page).encode("utf-8")]  # "Recipes/Miso Soup", "Miso Soup"
        lines += [line.strip().encode("utf-8") for line in text.split("\n") if line.strip()]
    return lines, names


class QuotesOrFrames:
    """A span-taught model's reply: a quote (once it opens as one, only that), one of its
    own sentences, or one of its frames with the notes copied in (SpanFrames). A reply
    opened as a quote stays one: offered the frames' looser copies there too ("On your X
    page: " is also a frame's opening), the smoke model left the block's start for words
    further on (docs/chat.md)."""

    def __init__(self, quotes: FaithfulCopy, span: SpanFrames) -> None:
        self.quotes, self.frames = quotes, span
        self.may_loop = False  # whether the last reply read is only a frame's (the repeat guard's business)

    def allowed(self, produced: bytes | bytearray) -> list[int] | None:
        if self.quotes.quoting(bytes(produced)):
            self.may_loop = False
            return self.quotes.allowed(produced)
        quotes, frames = self.quotes.allowed(produced), self.frames.allowed(produced)
        self.may_loop = quotes is None and frames is not None
        got = [a for a in (quotes, frames) if a is not None]
        return sorted(set().union(*got)) if got else None

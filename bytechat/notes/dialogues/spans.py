"""The part of a block that answers a question: always a substring of the block's text.

A reply says the span in a sentence of its own (bytechat.notes.dialogues.frames); the span
itself is copied from the notes, so the copy head can keep it faithful, and a template
never puts a value into a reply that the notes do not hold (a test checks every span).

- an attribute (`key: value`): the value's first clause, "14 February" of
  "14 February. Yes, really.", "14, next to the water tap" of "14, next to the water tap
  (a blessing in August)"; a value that starts with "my " is said as "your ..." with
  "my " left out of the span.
- a TODO question: the block's open TODO lines.
- a keyword question: the sentence of the line that holds the word (the gist).
- a summary: each shown block's first clause, short (bytechat.notes.dialogues.summary).
"""

from __future__ import annotations

import re

from bytechat.notes.blocks import TODO_LINE

KEY_VALUE = re.compile(r"^([A-Za-z][\w' -]{0,30}): (.+)$")
SPAN_MAX = 90  # bytes: a longer value is cut at a clause boundary before this
_MARKER = re.compile(r"^(?:TODO|DONE) ")
# Where a value's first clause ends: a sentence end, a parenthesis, an arrow to another
# page, a semicolon or dash aside, a trailing tag.
_CLAUSE_END = re.compile(r"\.\s+(?=\S)|\s+\(|\s+→|;\s|\s+—\s|\s+–\s|\s+#(?=\w)|\s+-\s")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9\"'(“])")
_ABBREVIATION = re.compile(r"(?:^|[\s(\[])(?:[A-Z]|Mr|Mrs|Ms|Dr|St|vs|etc|e\.g|i\.e|approx|no)\.$")
_TRAILING = ".,;: "
_MONTHS = "January|February|March|April|May|June|July|August|September|October|November|December"
_ON_DATE = re.compile(rf"^(?:\d{{1,2}} (?:{_MONTHS})|(?:{_MONTHS}) \d{{1,2}}(?:st|nd|rd|th)?\b)")
_IN_DATE = re.compile(rf"^(?:(?:early|late|mid|spring|summer|autumn|winter|{_MONTHS})\b.*\d{{4}}|\d{{4}})$", re.I)


def _size(text: str) -> int:
    return len(text.encode("utf-8"))


def clause(text: str, limit: int = SPAN_MAX) -> str:
    """text's first clause (see the module docstring), no trailing punctuation; a clause
    still longer than limit bytes is cut at its last ", " or " and " before the limit."""
    text = text.strip()
    tags = text.startswith("#")  # "#book #science fiction": the tags are the value
    for m in _CLAUSE_END.finditer(text):
        if tags and m.group().lstrip().startswith("#"):
            continue
        if m.start() > 0 and not _ABBREVIATION.search(text[: m.start() + 1]):
            text = text[: m.start()]
            break
    if _size(text) > limit:
        head = text.encode("utf-8")[:limit].decode("utf-8", errors="ignore")
        cut = max(head.rfind(", "), head.rfind(" and "))
        if cut > limit // 3:
            text = head[:cut]
    return text.rstrip(_TRAILING) or text.strip()


def value_span(value: str) -> str:
    """The answering part of an attribute's value (TODO/DONE markers dropped)."""
    return clause(_MARKER.sub("", value.strip()))


def attribute(text: str) -> tuple[str, str] | None:
    """(key, value) of a one-line `key: value` block, else None."""
    if "\n" in text:
        return None
    m = KEY_VALUE.match(text)
    return (m.group(1).strip(), m.group(2).strip()) if m else None


def yours(span: str) -> tuple[str, str]:
    """("your ", rest) for a span that starts with "my " ("my manager since March 2025":
    the reply says "your manager since March 2025", copying "manager since ..."), else
    ("", span)."""
    if span[:3].lower() == "my " and len(span) > 3:
        return "your ", span[3:]
    return "", span


def open_todos(text: str) -> list[str]:
    """The text of each open TODO line of a block, in order."""
    return [m.group(1).strip() for m in map(TODO_LINE.match, text.split("\n")) if m]


def sentences(line: str) -> list[str]:
    """line's sentences ("Mr. Bakker" and "Ursula K. Le Guin" are not two)."""
    line = line.strip()
    out, start = [], 0
    for m in _SENTENCE_END.finditer(line):
        if not _ABBREVIATION.search(line[: m.start()]):
            out.append(line[start : m.start()])
            start = m.end()
    out.append(line[start:])
    return [s.strip() for s in out if s.strip()]


def sentence_with(line: str, word: str) -> str:
    """The sentence of line that holds word (case-insensitive), else the line's first."""
    found = sentences(line)
    low = word.lower()
    return next((s for s in found if low in s.lower()), found[0] if found else line.strip())


def ended(text: str) -> str:
    """text as the end of a sentence: a full stop added unless it already ends one."""
    text = text.rstrip()
    return text if text.endswith((".", "!", "?", "…", '"', "”")) else text.rstrip(",;:") + "."


def date_preposition(span: str) -> str:
    """ "on" for a day ("14 February", "March 3rd, 2027"), "in" for a month, season or
    year ("February 2026", "spring 2024"), "" when the span is not a plain date."""
    if any(sep in span for sep in (" to ", "→", " - ", "–")):
        return ""  # a range: "20 December to 1 July"
    if _ON_DATE.match(span):
        return "on"
    if _IN_DATE.match(span):
        return "in"
    return ""

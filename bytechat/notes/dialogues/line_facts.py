"""Facts inside a note's own sentences, asked for by kind: what teaches the span head to
point into prose, not only at a `key: value` line's value.

A person's notes say most facts in passing ("crates arrive on 11 January, 3 per
person", "Met Nal at 13:45"); the attribute, TODO and keyword questions of asking.slots
never ask for one of those, so the answer head (bytechat/model/span_head.py) learned to
point at whole lines or at a value after its key. Here a line's temperature, date, time,
duration, amount, count or frequency is the fact, and the question asks for its kind with the
line's other words ("when crates arrive?"), in the way of cloze questions: the head
learns to find the line that shares the question's words and, in it, the text of the
asked kind that the question does not already say.

The kinds are answer_kinds.answer_kind's (the serving side answers only questions that ask one);
each pattern below is the span of text that kind is, written from English, not from any
question set. Deterministic given the rng: a block gives at most one slot.
"""

from __future__ import annotations

import calendar
import random
import re

from bytechat.notes.blocks import NoteBlock
from bytechat.notes.dialogues.asking import Slot
from bytechat.notes.dialogues.spans import KEY_VALUE
from bytechat.notes.query import query_terms

_MONTHS = "|".join(calendar.month_name[1:])
_MONTH = rf"(?:{_MONTHS}|{'|'.join(calendar.month_abbr[1:])}|Sept)"
_WEEKDAY = r"(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)days?"
_ORDINAL = r"\d{1,2}(?:st|nd|rd|th)?"
# A date, a weekday, or a month alone ("from October"; not May, which is also a verb).
_ONE_DATE = (
    rf"(?:{_WEEKDAY},? )?(?:{_ORDINAL} (?:of )?{_MONTH}(?:,? \d{{4}})?|{_MONTH} {_ORDINAL}(?:,? \d{{4}})?"
    rf"|{_MONTH} \d{{4}})|{_WEEKDAY}|(?:{_MONTHS.replace('May|', '')})"
)
_CLOCK = r"\d{1,2}[:.]\d{2}(?: ?[ap]m)?|\d{1,2} ?[ap]m"
_UNIT = r"(?:minutes?|mins?|hours?|hrs?|days?|weeks?|months?|years?|nights?)"
# The span each kind is: what a person's answer to "when ...?", "how long ...?" would be.
SPANS = (
    ("temperature", re.compile(r"-?\d+(?:[.,]\d+)? ?°\s?[CF]?(?: fan)?|\b\d+ degrees\b|\bgas mark \d+\b", re.I)),
    ("date", re.compile(rf"\b(?:{_ONE_DATE})(?: (?:to|and|-|–) (?:{_ONE_DATE}|{_ORDINAL}))?\b")),
    ("time", re.compile(rf"\b(?:{_CLOCK})(?: ?(?:to|-|–) ?(?:{_CLOCK}))?(?!\w)", re.I)),
    ("duration", re.compile(rf"\b\d+(?:[.,]\d+)?(?: (?:to|-|–) \d+)? ?{_UNIT}\b", re.I)),
    (
        "amount",
        re.compile(
            r"[€$£]\s?\d+(?:[.,]\d+)?|\b\d+(?:[.,]\d+)? ?(?:euros?|dollars?|pounds?|CHF|EUR|USD|kg|g|mg|ml|l|"
            r"litres?|liters?|tbsp|tsp|cups?|%)(?!\w)",
            re.I,
        ),
    ),
    (
        "frequency",
        re.compile(
            r"\bevery (?:other |second |third )?(?:day|night|week|month|year|morning|evening|\w+day)\b|"
            r"\b(?:once|twice|three times) (?:a|per) (?:day|week|month|year)\b|\b(?:daily|weekly|monthly|nightly)\b",
            re.I,
        ),
    ),
    ("count", re.compile(r"(?<![\w:.,+#-])\d{1,3}(?= [a-z]{3,})")),  # "24 desks", "3 per person"
)
# How a person asks for each kind; {topic} is the line's other words.
QUESTIONS = {
    "temperature": (
        "what temperature {topic}?",
        "How hot {topic}?",
        "{topic}: what temperature?",
        "what temp for {topic}",
    ),
    "date": ("when {topic}?", "When is {topic}?", "what date {topic}?", "{topic}: when?", "remind me when {topic}"),
    "time": ("what time {topic}?", "At what time {topic}?", "{topic}: what time?", "what time is {topic}"),
    "duration": ("how long {topic}?", "How long is {topic}?", "{topic}: how long?", "how long for {topic}"),
    "amount": ("how much {topic}?", "How much is {topic}?", "{topic}: how much?", "how much for {topic}"),
    "frequency": ("how often {topic}?", "How often is {topic}?", "{topic}: how often?"),
    "count": ("how many {topic}?", "How many {topic}?", "{topic}: how many?", "number of {topic}?"),
}
MAX_TOPIC_WORDS = 6
_MARKER = re.compile(r"^(?:TODO|DONE) ")
_CLAUSE = re.compile(r"[,;.!?—–]\s|\s\(|\)\s")


def _taken(spans: list[tuple[int, int, str]], start: int, end: int) -> bool:
    return any(start < e and s < end for s, e, _ in spans)


def line_facts(line: str) -> list[tuple[str, str, str]]:
    """(kind, span, topic) for each fact of a kind in one line of notes, earlier kinds
    first where two overlap ("20:00 to 22:00" is a time, not a count); topic: the content
    words of the span's clause, else of the whole line, less every fact's text."""
    spans: list[tuple[int, int, str]] = []
    for kind, pattern in SPANS:
        spans += [(m.start(), m.end(), kind) for m in pattern.finditer(line) if not _taken(spans, m.start(), m.end())]
    blank = list(line)
    for start, end, _ in spans:
        blank[start:end] = " " * (end - start)
    rest = "".join(blank)
    cuts = [0, *(c.end() for c in _CLAUSE.finditer(line)), len(line) + 1]
    found = []
    for start, end, kind in sorted(spans):
        lo = max(c for c in cuts if c <= start)
        hi = min(c for c in cuts if c > start)
        words = query_terms(rest[lo:hi])
        if len(words) < 2:
            words = query_terms(rest)
        if words:
            found.append((kind, line[start:end], " ".join(words[:MAX_TOPIC_WORDS])))
    return found


def line_slot(block: NoteBlock, rng: random.Random) -> Slot | None:
    """A question for one fact said in passing in the block, drawn by rng (the slot's
    fields: the question; its answer: the fact); None for a one-line `key: value` block
    (its attribute question asks that) or a block that says none."""
    lines = [_MARKER.sub("", line.strip()) for line in block.text.split("\n")]
    if len(lines) == 1 and KEY_VALUE.match(lines[0]):
        return None
    facts = [fact for line in lines for fact in line_facts(line)]
    if not facts:
        return None
    kind, span, topic = rng.choice(facts)
    return Slot("line", {"question": rng.choice(QUESTIONS[kind]).format(topic=topic)}, span)

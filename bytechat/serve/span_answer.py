"""A fact question's answer, pointed at: the span head's pick in the best block shown.

"when is Jonas's birthday?" is answered `From [Jonas] 14 February`, not with the whole
birthday line and the joke after it. The model's span head (bytechat/model/span_head.py)
reads the prompt and scores where the answer starts and ends; the answer is its best span
in the block retrieval ranked first (placed last in the notes, where a reply's first
quote comes from: copying.BEST_FIRST), on one line and in one sentence, at most
MAX_BYTES, starting and ending at a word's edge. Faithful decoding then allows that one
quote (FaithfulCopy.answer_with), or the abstention where the model prefers it by the
margin, as for any quote.

Only for a question that asks a kind of answer (answer_kinds.span_kind: when, what time, how
long, how much, how many, how often, and who: a name). A fact question that asks none
("which pears do I use?", "is breakfast included?") gets the one line of the block that
says its words, where one stands out, or its clause or value (bytechat.serve.line_answer:
no model). A whole-page question, "how
do I ..." and small talk are answered as before. Measured in docs/notes.md ("Measured:
an extractive answer head", "Measured: facts said in passing") and docs/chat.md.
"""

from __future__ import annotations

import re
from typing import Sequence

import torch

from bytechat.model import GPT
from bytechat.notes.answer_kinds import (
    DATE,
    FREQUENCY,
    FREQUENCY_WHOLE,
    NAME,
    NUMBER,
    PLACE,
    QUANTITIES,
    span_kind,
)
from bytechat.notes.blocks import TODO_LINE
from bytechat.notes.query import counted_word, fold_latin, names_page, query_terms, words
from bytechat.serve.line_answer import line_answer, says
from bytechat.serve.line_answer import topic as line_topic
from bytechat.serve.own_words import last_user
from bytechat.serve.prompt_notes import prompt_messages, shown_entries
from bytechat.text.chat_format import escape_content

# Whether a fact question is answered with the head's span (off: the best block quoted
# whole, as before the head); measured in docs/chat.md, "A fact question's answer, pointed at".
SPAN_ANSWERS = True
# Whether the answer to a question for a quantity (answer_kinds.QUANTITIES: how many, how much,
# how long, what time) starts where the block says one, or a range of them ("8 to 10
# days"), where the block says any: the head chooses which and where it ends.
QUANTITY_STARTS = True
# Whether the span must hold text of the kind the question asks (answer_kinds.span_kind: a date
# for "when", an amount for "how much", a name for "who") where the best block has any.
KIND_SPANS = True
# Whether a span stays in one sentence: a fact is said in one, and where the head's end
# scores are flat along a line it ran on into the next ("14 February. Yes, really. He
# says ..."). Measured in docs/chat.md ("Two edges").
ONE_SENTENCE = True
_SENTENCE_END = b".!?"  # followed by a space
# "how do I ..." asks for the steps, the block whole; so does a page question (names_page).
_STEPS = re.compile(r"^\W*how (?:do|should|can|would|to|did)\b", re.IGNORECASE)
# Whether a quantity the span must hold is said whole: its parts side by side ("1 hour 10
# minutes", "2 hours and 15 minutes") and its rate ("€96 a night", "€18 a month", "€14 each
# way"). Measured in docs/chat.md ("A quantity said whole").
WHOLE_QUANTITIES = True
_JOINS = re.compile(r"(?: (?:and )?)?")
_RATE = re.compile(r" (?:a|an|per|each) [^\W\d_]+\b")
_RATE_WORD = re.compile(r" (?:a|an|per|each)$")
# Whether a TODO question's answer is the task whole, the TODO line less its marker, as a
# person reads a todo ("buy a 72-hour Copenhagen Card", not "buy a 72-hour Copenhagen"):
# the head chooses which task. Measured in docs/chat.md ("A quantity said whole").
WHOLE_TASKS = True
# Whether a quantity question's answer is one quantity, whole: it ends where the quantity
# it starts at ends (a bare number with the word after it, what it counts, or without:
# "24 desks" or "24"), not where the head's end scores, flat along a line, run on to ("24
# desks for 31 people, so hot-desking on Mondays and Fridays"). And where some of the
# block's quantities say a topic word of the question, or are followed closely by one
# ("200 g sugar" for "how much sugar", "€420 for the hotel"), one of those. A frequency is
# answered so too ("every other week"). Measured in docs/chat.md ("One quantity").
ONE_QUANTITY = True
# Whether a number the question counts ("how many cloves ...?") is said with what it counts
# where the block says it ("4 garlic cloves"), not bare.
SAY_THE_COUNTED = True
# Whether a "when" question's answer is one date, said whole: the day with its month, its
# year and its time ("29 January 2027", "every second Wednesday at 19:00", "the second
# Saturday of the month") and the word that bounds it ("before March"); the head chooses
# which. Measured in docs/chat.md ("One date").
ONE_DATE = True
_DATE_BEFORE = re.compile(
    r"(?:(?:(?:before|after|by|until|till|since|from|about|around|between) )?(?:the )?(?:(?:every|each) )?"
    r"(?:(?:first|second|third|fourth|last|next|other) )?(?:\d{1,2}(?:st|nd|rd|th)? (?:of )?)?)$",
    re.I,
)
_DATE_AFTER = re.compile(
    r"(?:st|nd|rd|th)?(?: \d{1,2}(?:st|nd|rd|th)?\b)?(?:,? (?:19|20)\d{2}\b)?(?: of the month\b)?(?: at \d{1,2}[:.h]\d{2}\b)?",
    re.I,
)
# Whether a name or place the question's topic words come just before, in its clause, is one
# the topic says too ("Garage: Autohaus Brink, ask for Henk" for "who should I ask for?").
NAMES_AFTER_TOPIC = True
# Whether "when does it start?" is answered with the date the block says a start with ("from 1
# March", "since 2019") where it says one, and "when does it end?" with an end's ("until May").
DATE_BOUNDS = True
_BOUNDS = (
    (re.compile(r"start\w*|begin\w*|began|commenc\w*|open\w*"), re.compile(rb"(?:from|since|starting) ", re.I)),
    (re.compile(r"end\w*|finish\w*|clos\w*"), re.compile(rb"(?:until|till|by|before) ", re.I)),
)
_DAY_RANGE_FROM = re.compile(r"\d{1,2}(?:st|nd|rd|th)? ?(?:to|-|\u2013) ?$")  # "12 to " of "12 to 16 February"
# between two dates said as one: "Monday 18 January", "the weekend of 16 January", "Mondays and Fridays"
_DATES_JOIN = re.compile(r",? ?|,? of |,? and ")
_GROUPED = re.compile(rb"\d[.,]|[.,]\d")  # a number's digit groups: "\d[.,]" before it, "[.,]\d" after
_WORD = re.compile(r"[^\W_]+")
_NEXT = re.compile(r"[,;:.!?()\[\]]|\d")
_TOPIC_WITHIN = 3  # words after a quantity that may say what it is of ("300 ml cold strong tea")
MAX_BYTES = 96  # longer than any value a fact question asks for; a line's rest is no answer
_NOTES_END = b"\nuser: "


def _inside_word(text: bytes, at: int) -> bool:
    """Whether at falls between two bytes of one word (letters, digits, UTF-8, and a hyphen
    between two of those: "72-hour", "swing-top" are one word each)."""
    return 0 < at < len(text) and _word_byte(text, at - 1) and _word_byte(text, at)


def _word_byte(text: bytes, i: int) -> bool:
    c = text[i]
    if c == 0x2D:  # "-": part of a word only between two of its letters or digits
        return 0 < i < len(text) - 1 and _letter(text[i - 1]) and _letter(text[i + 1])
    return _letter(c)


def _letter(c: int) -> bool:
    return chr(c).isalnum() or c >= 0x80


def _matches(text: bytes, lo: int, hi: int, kind: re.Pattern) -> list[tuple[int, int]]:
    """(first, last) byte of each text of the kind in text[lo:hi]; a quantity is said
    whole (WHOLE_QUANTITIES): "1 hour 10 minutes" is one, and so is a rate, "€96 a night"."""
    segment = text[lo:hi].decode("utf-8", errors="ignore")
    group = "place" if "place" in kind.groupindex else 0  # a PLACE is what follows its "in", "at", ...
    spans = [(m.start(group), m.end(group)) for m in kind.finditer(segment) if m.end(group) > m.start(group)]
    if WHOLE_QUANTITIES and kind in QUANTITIES:
        joined: list[tuple[int, int]] = []
        for start, end in spans:
            if joined and _JOINS.fullmatch(segment, joined[-1][1], start):  # "€9" "6" or "1 hour" "10 minutes"
                start = joined.pop()[0]
            cut = _RATE_WORD.search(segment, start, end)  # "6 a": the kind took the rate's "a" as its unit
            rate = _RATE.match(segment, cut.start() if cut else end)
            joined.append((start, max(end, rate.end()) if rate else end))
        spans = joined
    return [
        (lo + len(segment[:start].encode("utf-8")), lo + len(segment[:end].encode("utf-8")) - 1) for start, end in spans
    ]


def kind_ends(text: bytes, lo: int, hi: int, kind: re.Pattern | None) -> list[int] | None:
    """For each byte of text[lo:hi], where the first text of the asked kind that starts at
    or after it ends (hi where none does): a span must reach it to say that kind. None
    where the kind is not asked or the block says none (then any span may answer)."""
    if kind is None or kind is TODO_LINE or not KIND_SPANS:  # a TODO's answer is its task, not the marker
        return None
    found = _matches(text, lo, hi, kind)
    if not found:
        return None
    ends = [hi] * (hi - lo + 1)
    for first, last in found:
        ends[first - lo] = min(ends[first - lo], last)
    for at in range(hi - lo - 1, -1, -1):  # the nearest end from here on
        ends[at] = min(ends[at], ends[at + 1])
    return ends[:-1]


_RANGE_FROM = re.compile(rb"(?:^|(?<=[\s(]))[^\s(]+ ?(?:to|-|\xe2\x80\x93) ?$")  # "8 to ", "10-", "10 \u2013 "


def quantity_starts(text: bytes, lo: int, hi: int, kind: re.Pattern | None) -> set[int]:
    """Where an answer for a quantity may start in text[lo:hi]: where each text of the
    kind starts, at its word's first byte, or, for one that ends a range, where the range
    starts ("8 to 10 days", never "10 days"); empty where the kind is no quantity or the
    block says none."""
    if not QUANTITY_STARTS or kind not in QUANTITIES:
        return set()
    starts = set()
    for first, _ in _matches(text, lo, hi, kind):
        while first > lo and _inside_word(text, first):
            first -= 1
        ranged = _RANGE_FROM.search(text, max(lo, first - 24), first)
        starts.add(ranged.start() if ranged else first)  # a range is said whole
    return starts


def quantities(
    text: bytes, lo: int, hi: int, kind: re.Pattern, topic: Sequence[str] = (), counted: str | None = None
) -> list[tuple[int, int]]:
    """The (first, last) bytes an answer to a quantity question may span in text[lo:hi]
    (ONE_QUANTITY): each quantity of the kind, from its word's first byte (or its range's:
    "8 to 10 days") to its word's last, and a bare number also with what it counts: the
    word after it, or the counted word ("how many cloves": "4 garlic cloves") where that
    follows it closely. Only the quantities that say one of the topic words, or are
    followed closely by one ("€420 for the hotel", "200 g sugar"), where any is."""
    found, said = [], []
    for first, last in _matches(text, lo, hi, FREQUENCY_WHOLE if kind is FREQUENCY else kind):
        while first > lo and _inside_word(text, first) or _GROUPED.fullmatch(text[max(lo, first - 2) : first]):
            first -= 1 if _inside_word(text, first) else 2  # its word's first byte; a number's first group ("1,400")
        while last + 1 < hi and _inside_word(text, last + 1) or _GROUPED.fullmatch(text[last + 1 : min(hi, last + 3)]):
            last += 1 if _inside_word(text, last + 1) else 2  # its word's last byte; a number's last group ("1.5")
        ranged = _RANGE_FROM.search(text, max(lo, first - 24), first)
        first = ranged.start() if ranged else first
        rest, near = _after(text, last, hi)
        counts = [w for w in near if counted and says(counted, fold_latin(w[0].lower()))]
        ends = [last]
        if kind is NUMBER and rest.startswith(" ") and near:  # a bare number with what it counts
            ends.append(last + len(rest[: (counts or near)[0].end()].encode("utf-8")))
            if counts and SAY_THE_COUNTED:  # "how many cloves": "4 garlic cloves", never a bare "4"
                ends = ends[1:]
        found += [(first, end) for end in ends]
        if _with_topic(text, first, last, hi, topic):
            said += [(first, end) for end in ends]
    return list(dict.fromkeys(said or found))


def _with_topic(text: bytes, first: int, last: int, hi: int, topic: Sequence[str], lo: int | None = None) -> bool:
    """Whether text[first:last + 1] says one of the topic words, or the few words after it
    do, before the next clause or number ("€420 for the hotel", "Evert arranged himself"),
    or, given lo, the few words before it in its clause ("ask for Henk": NAMES_AFTER_TOPIC)."""
    after = [w[0].lower() for w in _after(text, last, hi)[1]]
    before = []
    if lo is not None:
        clause = _NEXT.split(text[lo:first].split(b"\n")[-1].decode("utf-8", errors="ignore"))[-1]
        before = [w.group(0).lower() for w in _WORD.finditer(clause)][-_TOPIC_WITHIN:]
    own = words(text[first : last + 1].decode("utf-8", errors="ignore")) + after + before
    return any(says(t, fold_latin(w)) for t in topic for w in own)


def _after(text: bytes, last: int, hi: int) -> tuple[str, list[re.Match]]:
    """The rest of text[last + 1:hi]'s line, and its first few words (_TOPIC_WITHIN) before the
    next clause or number: where what a quantity or a name is of is said."""
    rest = text[last + 1 : hi].split(b"\n", 1)[0].decode("utf-8", errors="ignore")
    return rest, list(_WORD.finditer(_NEXT.split(rest, 1)[0]))[:_TOPIC_WITHIN]


def dates(text: bytes, lo: int, hi: int) -> list[tuple[int, int]]:
    """The (first, last) bytes an answer to a "when" question may span in text[lo:hi]
    (ONE_DATE): each date the block says, with its day, ordinal, year, "of the month" and
    time ("every second Wednesday at 19:00"), a range whole ("12 to 16 February"), dates
    side by side as one ("Monday 18 January 2027", "the weekend of 16 January"), with the
    word that bounds it ("before March")."""
    segment = text[lo:hi].decode("utf-8", errors="ignore")
    spans: list[list[int]] = []
    for m in DATE.finditer(segment):
        before, after = _DATE_BEFORE.search(segment, 0, m.start()), _DATE_AFTER.match(segment, m.end())
        start = before.start()  # a bound is part of what the date says: "before March", never "March"
        ranged = _DAY_RANGE_FROM.search(segment[:start])
        start = ranged.start() if ranged else start
        if spans and _DATES_JOIN.fullmatch(segment[spans[-1][1] : start]):  # "Monday 18 January"
            spans[-1][1] = max(spans[-1][1], after.end())
        else:
            spans.append([start, after.end()])
    return [(lo + len(segment[:a].encode("utf-8")), lo + len(segment[:b].encode("utf-8")) - 1) for a, b in spans]


def reach(text: bytes, lo: int, hi: int) -> list[int]:
    """For each byte of text[lo:hi], the last byte a span starting there may end on: its
    line's last, or (ONE_SENTENCE) its sentence's, the "." before a space."""
    last, out = hi - 1, [0] * (hi - lo)
    for at in range(hi - 1, lo - 1, -1):
        sentence_end = ONE_SENTENCE and text[at : at + 1] == b" " and at > lo and text[at - 1] in _SENTENCE_END
        if text[at : at + 1] == b"\n" or sentence_end:
            last = at - 1
        out[at - lo] = last
    return out


def best_span(
    text: bytes,
    begin: list[float],
    end: list[float],
    lo: int,
    hi: int,
    kind: re.Pattern | None = None,
    topic: Sequence[str] = (),
    counted: str | None = None,
) -> tuple[int, int] | None:
    """(first, last) byte of the best-scoring span in text[lo:hi] (begin[i] + end[j], i <= j):
    on one line and in one sentence (reach), at most MAX_BYTES, at word edges, holding text
    of the asked kind where the block has any (kind_ends); for a quantity one of the block's
    quantities (quantities) and for a name (answer_kinds.NAME) one of its names, whole;
    None where there is none."""
    whole = None  # an answer with its own edges, whole: the head only chooses which
    if ONE_QUANTITY and (kind in QUANTITIES or kind is FREQUENCY) and KIND_SPANS:
        whole = _best_of(quantities(text, lo, hi, kind, topic, counted), begin, end, MAX_BYTES)
    elif ONE_DATE and kind is DATE and KIND_SPANS:
        said = dates(text, lo, hi)
        bound = next((b for asks, b in _BOUNDS if any(asks.fullmatch(t) for t in topic)), None) if DATE_BOUNDS else None
        bounded = [d for d in said if bound is not None and bound.match(text, d[0])]
        whole = _best_of(bounded or said, begin, end, MAX_BYTES)
    elif kind in (NAME, PLACE) and KIND_SPANS:
        named = _matches(text, lo, hi, kind)  # the ones the topic follows, where any (as for quantities)
        near = lo if NAMES_AFTER_TOPIC else None
        whole = _best_of([m for m in named if _with_topic(text, *m, hi, topic, near)] or named, begin, end)
    if whole is not None:
        return whole
    best, found = float("-inf"), None
    needs, limit = kind_ends(text, lo, hi, kind), reach(text, lo, hi)
    starts = quantity_starts(text, lo, hi, kind)
    for i in range(lo, hi):
        if text[i : i + 1] in (b"\n", b" ") or _inside_word(text, i) or begin[i] == float("-inf"):
            continue
        if starts and i not in starts:  # a quantity's answer starts at it
            continue
        first = i if needs is None else max(i, needs[i - lo])  # the first end that holds the kind asked
        for j in range(first, min(i + MAX_BYTES, limit[i - lo] + 1)):  # none where that text is past the reach
            if _inside_word(text, j + 1) or text[j : j + 1] == b" ":
                continue
            if begin[i] + end[j] > best:
                best, found = begin[i] + end[j], (i, j)
    return found


def _best_of(
    spans: list[tuple[int, int]], begin: list[float], end: list[float], max_bytes: int | None = None
) -> tuple[int, int] | None:
    """The first of the spans the head scores highest (begin[first] + end[last]), of those
    shorter than max_bytes (any, where None); None where none scores above -inf."""
    best, found = float("-inf"), None
    for first, last in spans:
        if (max_bytes is None or last - first < max_bytes) and begin[first] + end[last] > best:
            best, found = begin[first] + end[last], (first, last)
    return found


def answer_span(model: GPT, prompt: bytes) -> str | None:
    """The text that answers the prompt's last question, copied from the best block
    shown: the head's span for a question that asks a kind of answer, else the block's
    line_answer; None where the model has no span head, no notes are shown, the question
    asks for a whole page or for steps, or nothing is found."""
    if not SPAN_ANSWERS or getattr(model, "span", None) is None:
        return None
    messages = prompt_messages(prompt)
    entries, asked = shown_entries(messages), last_user(messages)
    if not entries or asked is None:
        return None
    kind, best = span_kind(asked), entries[-1]
    page, text = best[1:].split("] ", 1)  # the best block's page and what it says
    if kind is not None and not kind.search(text):
        kind = None  # a block that says no text of the kind asked is answered as for no kind: its line
    if names_page(asked, page):
        return None  # "who is Priya?" asks about her page, not for a name: answered as a page question
    if kind is None:
        return line_answer(asked, best, steps=bool(_STEPS.search(asked)))
    window = prompt[-model.config.block_size :]
    shown = escape_content(best).encode("utf-8")  # the best block as the prompt writes it, placed last
    notes_end = window.find(_NOTES_END)
    start = window.rfind(b"\n" + shown, 0, notes_end) + 1
    if notes_end < 0 or start == 0:
        return None  # the notes were cut off the window
    opening = len(f"[{page}] ".encode("utf-8"))  # no answer starts in it
    device = model.wte.weight.device
    begin, end = model.span_scores(torch.tensor([list(window)], device=device))
    topic, counted = line_topic(asked, best), counted_word(asked, query_terms(asked))
    found = best_span(window, begin.tolist(), end.tolist(), start + opening, start + len(shown), kind, topic, counted)
    if found is None:
        return None
    span = window[found[0] : found[1] + 1].decode("utf-8", errors="ignore").strip()
    if kind is TODO_LINE and WHOLE_TASKS:
        span = next((m.group(1).strip() for m in TODO_LINE.finditer(text) if span in m.group(1)), span)
    return span if span and span in best else None

"""The kind of answer a question asks for: a date for "when", a number for "how many",
an amount for "how much", a name for "who" (the answer head's only).

Retrieval ranks the blocks that hold that kind of text higher and lets it stand for an
asked word on the page a question names (bytechat.notes.search); the answer head's span
must hold it (bytechat.serve.span_answer).
"""

from __future__ import annotations

import calendar
import re

from rapidfuzz.distance import Levenshtein
from wordfreq import zipf_frequency

from bytechat.notes.blocks import TODO_LINE

QUESTION_WORDS = frozenset("what when where which who whom whose why how".split())
_QUESTION_WORD = re.compile(r"\b(?:" + "|".join(sorted(QUESTION_WORDS)) + r")\b", re.IGNORECASE)

# The kind of answer a question word asks for ("when" wants a date or a time, "how
# many" a number): a block holding that kind of text is more likely the answer. Question
# words are stopwords (bytechat.notes.query), so this is the only way they still count.
# A month is its name or its abbreviation ("Mar", "March"), not any word it opens
# ("married", "novel", "decide"); a year is 1900-2099, not any four digits ("policy 7731").
_MONTHS = "|".join(
    name[:3] + f"(?:{name[3:]})?" if len(name) > 3 else name for name in map(str.lower, calendar.month_name[1:])
)
_DATE = re.compile(
    rf"\b(?:(?:{_MONTHS}|sept)|(?:monday|tuesday|wednesday|thursday|friday|saturday|sunday)s?|christmas|easter|new year|halloween|today|tomorrow|"
    r"tonight|yesterday|weekend|morning|evening|\d{1,2}[:.h]\d{2}|\d{1,2} ?(?:am|pm)|(?:19|20)\d{2})\b",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"\d|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|twelve|twenty|half|dozen)\b", re.I)
# "how often" wants a frequency ("every other week", "twice a month", "daily").
_FREQUENCY = re.compile(
    r"\b(?:every|each|once|twice|daily|weekly|monthly|yearly|nightly|per|times|always|usually)\b", re.I
)
# "what time" wants a time of day, "how long" a duration, "what temperature" degrees.
_TIME = re.compile(r"\b(?:\d{1,2}[:.h]\d{2}|\d{1,2} ?(?:am|pm)|noon|midnight)\b", re.I)
_DURATION = re.compile(
    r"\b(?:\d+(?:[.,]\d+)? ?(?:min|mins|minutes?|h|hrs?|hours?|days?|weeks?|months?|years?|nights?)|"
    r"minutes|hours|days|weeks|months|years|nights)\b",
    re.I,
)
# A temperature is said with its number ("200 °C", "gas mark 6") and its oven ("160 °C fan",
# as British recipes write it), where the notes give one.
_TEMPERATURE = re.compile(
    r"\d+(?:[.,]\d+)? ?°[CF]?(?: fan\b)?|°|\b\d+(?:[.,]\d+)? degrees\b|\bdegrees\b|\bgas mark(?: \d+)?\b", re.I
)
# "how much" wants an amount: money, or a number and what it counts ("4 tbsp", "14 jars",
# "200 ml"), not a bare number (a house number, a booking reference).
# A day and its month ("24 April") is a date, not a number and what it counts, and a word
# that joins ("420 for the hotel", "3 and 4") counts nothing; money is its whole number ("€1,400").
_JOINING = "a|an|and|as|at|by|for|from|in|into|of|on|or|the|to|with"
_AMOUNT = re.compile(
    rf"[€$£¥]\s?\d+(?:[.,]\d+)*|\d(?:[.,]\d+)?\s?(?:%|€|(?!(?:{_MONTHS}|sept|{_JOINING})\b)[^\W\d_]+\b)|\b(?:half|a handful|a pinch)\b",
    re.I,
)
# "how old" wants an age: a number said as one ("Zofia (9)", "turns 78", "is 4", "9 years
# old") or a birth ("born in March 2021"), not a day of the month ("birthday: 2 February").
_AGE = re.compile(
    r"\(\d{1,3}\)|\b(?:aged?|turns?|turning|turned|is|are|was) \d{1,3}\b(?! ?(?:%|°|[.,:]\d|(?:[kcm]?m|k?g|ml|l|lb|miles?|hours?|minutes?|days?|weeks?|times)\b))"
    r"|\b\d{1,3}(?:-| )(?:years?|yrs?|months?)(?:-| )old\b|\bborn\b",
    re.I,
)
_ASKS = (
    (re.compile(r"\b(?:todos?|to-dos?|tasks?|to do|get done|still have to)\b", re.I), TODO_LINE),
    (re.compile(r"\b(?:temperature|temp|how hot)\b", re.I), _TEMPERATURE),
    (re.compile(r"\bhow often\b", re.I), _FREQUENCY),
    (re.compile(r"\b(?:what|which) (?:time|hours?)\b", re.I), _TIME),
    (re.compile(r"\bhow long\b", re.I), _DURATION),
    (re.compile(r"\b(?:when|what date|what days?|which days?|how soon)\b", re.I), _DATE),
    (re.compile(r"\bhow much\b", re.I), _AMOUNT),
    (re.compile(r"\bhow old\b", re.I), _AGE),
    (re.compile(r"\bhow (?:many|far|big|tall|heavy)\b", re.I), _NUMBER),
)

# The kinds whose answer opens with their own text: "how long do I toast the rice?" is
# answered from "2 minutes", not from "Toast the rice in the oil for"; a date's day comes
# before its month, so "when" is not one of them.
QUANTITIES = (_NUMBER, _AMOUNT, _DURATION, _TIME, _TEMPERATURE)
FREQUENCY = _FREQUENCY
# A frequency said whole, as the answer head says it: "every other week", "twice a month",
# "3 times a week", "daily" (bytechat.serve.span_answer).
FREQUENCY_WHOLE = re.compile(
    r"\b(?:every|each) (?:(?:other|second|third|fourth|few|couple of) )?[^\W\d_]+(?: of the month)?"
    r"|\b(?:once|twice|\d+ times|three times|four times) (?:a|per|each) [^\W\d_]+"
    r"|\b(?:daily|weekly|monthly|yearly|nightly|fortnightly|always|usually)\b",
    re.I,
)
DATE = _DATE  # a date's answer is said whole around it ("every second Wednesday at 19:00"): bytechat.serve.span_answer
AGE = _AGE  # the answer head says an age as a number (span_kind)
NUMBER = _NUMBER  # a bare number's unit is the word after it ("24 desks"): bytechat.serve.span_answer


def answer_kind(question: str) -> re.Pattern | None:
    """The pattern of text a question's words ask for, or None (see above)."""
    first = _QUESTION_WORD.search(question)
    for asks, kind in _ASKS:
        for found in asks.finditer(question):
            # A question word asks only as the question's own: "who waters it when I'm
            # away?" asks who, and "when" opens a clause of it ("who and when?" asks both).
            said = found.group(0).split()[0].lower()
            before = question[: found.start()].rstrip().lower()
            if (
                first is None
                or said not in QUESTION_WORDS
                or found.start() == first.start()
                or before.endswith(("and", ","))
            ):
                return kind
    return None


TYPED_ASKING = True  # whether the answer head reads "wen", "wher" as "when", "where" (docs/chat.md, "Typed")
PLACES = True  # whether "where" asks the answer head for a PLACE (docs/chat.md, "A place")
# "who" wants a name: a capitalised word (or run of them, "Evert Lindqvist") inside a
# sentence, not its first word, a month or a weekday, nor a word a page path's slash
# joins ("Recipes/Risotto"). The answer head asks for it (span_kind); retrieval's
# answer_kind leaves "who" out (a block need not hold a name), and its candidates that hold
# one only rise in the ranking (search.WHO_WHERE_RISE), as for a PLACE.
_CALENDAR_WORDS = "|".join([*calendar.month_name[1:], *calendar.day_name])
NAME = re.compile(
    rf"(?<=[a-z0-9,;:)] )(?!(?:{_CALENDAR_WORDS})s?\b)[A-Z][^\W\d_]*[a-z][^\W\d_]*"
    r"(?: [A-Z][^\W\d_]*[a-z][^\W\d_]*)*(?![\w/])"
)


# "where" wants a place: what follows a word of place ("in", "at", "from", "on", ...) up to
# the next word that joins ("with", "and") or the clause's end, a capitalised name after a
# comma going on ("Douglas, Cork"), and the places that locate it ("on the blue hook by my
# door"); not a time ("in 2019", "on Tuesdays", "in the morning"). Only the answer head
# asks for it (span_kind).
_PLACE_WORDS = "in|at|on|from|near|by|behind|under|above|inside|outside|beside|opposite|into|onto"
_STOP = rf"with|and|or|since|for|to|until|when|where|because|so|but|every|each|{_PLACE_WORDS}"
# "where did X come up in my notes?" asks where in the notes, for a note, not a place.
IN_THE_NOTES = re.compile(r"\b(?:notes?|noted|wrote|write|written|mention(?:s|ed)?|c[oa]me up|jott?(?:ed)?)\b", re.I)
_NOT_A_TIME = rf"(?!(?:the |a )?(?:\d|(?:{_CALENDAR_WORDS}|morning|evening|afternoon|night|weekend|spring|summer|autumn|winter)s?\b))"
_A_PLACE = rf"{_NOT_A_TIME}[^\W\d_][^,.;:!?()\[\]\n]*?(?:, [A-Z][^\s,.;:!?()]*)*"
PLACE = re.compile(  # the place is the group "place", with the places that locate it ("the hook by my door")
    rf"\b(?:{_PLACE_WORDS}) (?P<place>{_A_PLACE}(?: (?:{_PLACE_WORDS}) {_A_PLACE})*)"
    rf"(?=(?: (?:{_STOP})\b|[,.;:!?()\[\]\n]|$))"
)


# The words that ask, as people mistype them ("wen", "wher", "how ofen"): a word English
# rarely uses (Zipf below TYPED_BELOW) one edit from one of them is meant as it.
_ASKING = ("what", "when", "where", "which", "who", "how", "often", "many", "much", "long")
TYPED_BELOW = 4.0  # "wen" 3.5, "wher" 2.3; "then" 6.1 and "were" 6.3 are words of their own


def _left_out(typed: str, word: str) -> bool:
    """Whether typed is word with letters left out ("wher" of "where", not of "when")."""
    letters = iter(word)
    return all(ch in letters for ch in typed)


def as_typed(question: str) -> str:
    """question with each mistyped asking word written as meant (_ASKING): "wen do i treat the
    bees" -> "when do i treat the bees", "how ofen" -> "how often"."""

    def meant(m: re.Match) -> str:
        word = m.group(0).lower()
        if word in _ASKING or len(word) < 2 or zipf_frequency(word, "en") >= TYPED_BELOW:
            return m.group(0)
        near = [a for a in _ASKING if Levenshtein.distance(word, a) <= 1]
        near.sort(key=lambda a: not _left_out(word, a))  # a letter left out is the likeliest slip: "wher"
        return near[0] if near else m.group(0)

    return re.sub(r"[^\W\d_]+", meant, question)


# A topic named first, then the question: "what about the last one, who arranged it?"
_ABOUT_FIRST = re.compile(r"^\W*(?:and |so |ok,? )?(?:what|how) about [^,;?]*[,;] *(?=\w)", re.I)


def span_kind(question: str) -> re.Pattern | None:
    """The kind of text a question's answer span must say: answer_kind's, else a NAME
    where the question's own question word is "who" ("who gave me the SCOBY?") and a
    PLACE where it is "where"; its asking words read as meant (as_typed)."""
    question = as_typed(question) if TYPED_ASKING else question
    question = _ABOUT_FIRST.sub("", question)  # "what about the last one, who arranged it?" asks who
    kind = answer_kind(question)
    kind = _NUMBER if kind is _AGE else kind  # "Zofia (9)": the age is its number
    first = _QUESTION_WORD.search(question)
    if kind is None and first is not None and first.group(0).lower() in ("who", "whom"):
        return NAME
    if kind is None and first is not None and first.group(0).lower() == "where" and PLACES:
        return None if IN_THE_NOTES.search(question) else PLACE  # "where did I note it?" asks for a note
    return kind

"""What a question asks about: its topic words, and the notes' own words it may mean.

query_terms(text) keeps a question's topic words: lower-cased, Latin accents folded,
the how-people-ask words (STOPWORDS) removed. Against an index's vocabulary two more
rules apply (Vocabulary):
- a word the notes never use that is one edit from a stopword ("wat", "wen", "dos") or
  a single letter ("r", "u") is a misspelt way of asking, not a topic;
- a word the notes never use gets neighbours from the notes' own words: one edit away
  for words up to 7 letters and two for longer ones (Damerau/OSA distance from
  rapidfuzz: typos, "ruths" -> "ruth", "conducts" -> "conductor"), or, from 5 letters,
  a longer word that holds it less its last letter ("shelf" -> "bookshelves"), and a
  compound split into two of the notes' words ("bookclub" -> the phrase "book club").
Neighbours are searched below the question's own words (bytechat.notes.index).
"""

from __future__ import annotations

import calendar
import re
import unicodedata
from dataclasses import dataclass
from typing import Iterable, Mapping

from rapidfuzz import process
from rapidfuzz.distance import OSA
from wordfreq import zipf_frequency

from bytechat.notes.answer_kinds import QUESTION_WORDS, answer_kind
from bytechat.notes.readers.model import day_title

# Words that say how a person asks, not what about, chosen by word class and never
# because an eval prompt used them: English function words (articles, pronouns,
# prepositions, conjunctions, auxiliaries and modals, question words and the quantifiers
# of "how many / how long / how often"), the verbs of asking about notes ("remind me",
# "tell me", "find", "look up", "what did I write", "notes", "page", "summarise" and its
# nouns: "an overview", "a recap", "sum up"),
# with those verbs' inflections ("mentioning"), interjections (greetings, thanks, yes/no:
# they name no topic), contraction tails ("what's" -> "what", "s") and the
# contractions of these words typed without their apostrophe ("whats", "dont": FTS5's
# stemmer reads "whats" as "what", which every note that asks a question holds).
# Summary's nouns were added on 2026-12-05, when natural_dev's whole-page questions
# showed the class had gaps (docs/notes.md, rule 6); natural_test measured them
# untouched. A stopword costs more than its own word: a word the notes never use one
# edit from it reads as a misspelt way of asking (Vocabulary), so "give" would have
# turned "hives" into nothing; and "happened" stays a topic word: with it gone, "what
# happened on 9 December?" (no page for that day) found any block that says "December".
# "todo" is NOT here: TODO blocks are asked for ("what's on my todo list?"). Content
# words ("today", "morning", "tired", "joke") are topics, even in small talk: whether
# notes are found for them is retrieval's job, measured by the eval.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any anybody anyone anything are aren as at
    be because been before being below between both but by can cannot could couldn did didn do does
    doesn doing don done down during each either else ever every everything few for from
    further get gets go going got had hadn has hasn have haven having he her here hers herself him
    himself his how however i if in into is isn it its itself just kind let like me mine more most
    much must my myself no nor not now of off on once one only or other our ours ourselves out over
    own same shall she should so some something sort such than that the their theirs them
    themselves then there these they thing things this those through to too under until up upon us
    very was wasn way we were weren what whatever when whenever where which while who whom whose why
    will with would wouldn yet you your yours yourself yourselves many long often anyway actually really exactly
    find know list look mention mentioned need note noted notes page pages please put remind remember
    said say says see show summarise summarize summary tell want write writes writing written wrote
    mentions mentioning noting reminds reminded reminding summarises summarised summarising summarizes
    summarized summarizing overview recap rundown gist sum
    hi hello hey hiya yo thanks thank thx cheers ok okay yes yeah yep nope bye goodbye sorry
    s t m d ll re ve
    whats wheres whens whos hows whys thats theres heres dont doesnt didnt isnt arent wasnt werent
    hasnt havent hadnt cant couldnt wouldnt shouldnt wont im ive youre youve youll theyre theyve hes shes
    """.split()
)
# Words that point back to something said before (a follow-up: "who teaches it?", "and
# her address?"), and the interjections that close a topic rather than continue it.
ANAPHORS = frozenset("it its he him his she her hers they them their theirs that those these there one ones".split())
CLOSERS = frozenset("thanks thank thx cheers bye goodbye ok okay great nice cool".split())
CONTINUERS = ("and ", "also ", "what about ", "how about ")
FRAGMENTS = True  # a question word and one more word ("starting when?") refers back (refers_back)
_LEADING_CLOSERS = re.compile(r"^(?:(?:" + "|".join(sorted(CLOSERS)) + r")\b[\W_]*)+")

_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, like unicode61's token characters
# "how old / far / big / tall / heavy": the measure a question asks for (answer_kind
# below), not its topic; "how long / many / much / often" are stopwords already.
_MEASURE = re.compile(r"\b(how)\s+(?:old|far|big|tall|heavy)\b", re.IGNORECASE)
# "give me an overview of X", "can you give us the wifi code?": a way of asking, not a
# topic. "give" alone stays one ("what did I give Femke?"), and is no stopword: a word
# one edit from a stopword reads as a misspelt way of asking, and "hives" is one from it.
_GIVE_ME = re.compile(r"\bgive\s+(?:me|us)\b", re.IGNORECASE)
# "what happened on 3 December?" asks for that day's page as a whole (names_page); for a
# day without a page, "happened" stays a topic word of search (STOPWORDS above).
_HAPPEN = frozenset("happen happens happened happening".split())
_LONG_STOPWORDS = sorted(w for w in STOPWORDS if len(w) >= 3)
MAX_NEIGHBOURS = 3  # vocabulary neighbours kept per unknown word
ABBREVIATIONS = True  # a word's neighbours hold the notes' abbreviation of it: "ref" for "reference" (Vocabulary)
# A word this common in English (Zipf frequency: "key" 5.1, "wear" 4.9, "pension" 4.2) is
# meant as typed: never a misspelt way of asking, and its one-edit neighbours are its own
# forms (same first letters: "grow" -> "grew"), not other words; typos and the
# misspellings people type score below it ("wat" 3.4, "ofice" 1.2, "sourdouhg" 0).
COMMON_WORD = 4.0
CLAUSE = re.compile(r"[,;:.!?]+")
UNKNOWN_SPECIFICITY = 4.0  # a word unknown to English (a typo or a rare name)
RRF_K = 60  # reciprocal-rank fusion: a row scores sum(weight / (RRF_K + rank)) over the lists


def names_page(question: str, page: str) -> bool:
    """Whether question asks about page as a whole: it has topic words and every one is a
    word of the page's title ("what did I write about sourdough?" of Sourdough Starter,
    "tell me about Annika"), as search's page rule reads a question, less its typos and
    word forms but a plural's, with a day it names read as that day's title. A question
    with a word beyond the title asks for one fact, and so does one
    whose question word asks for a kind of answer ("when is the Copenhagen trip?" is a
    date: answer_kind), as search's page route reads it; and so does a follow-up ("and
    which mushrooms?" after the risotto's rice), as search reads one."""
    day_page = False
    for day in reversed(day_mentions(question)):  # "what happened on 3 December?": that day's page
        if page.split(", ")[0] == day_title(2000, day.month, day.day).split(", ")[0]:
            question = question[: day.start] + page + question[day.end :]
            day_page = True
    title = set(words(page))
    terms = [t for t in query_terms(question) if not (day_page and t in _HAPPEN)]
    return (
        bool(terms)
        and all(in_title(t, title) for t in terms)
        and answer_kind(question) is None
        and not is_follow_up(question)
    )


def in_title(term: str, title: set[str]) -> bool:
    """Whether a title holds term, or its plural or singular ("recipe" of Recipes/...), as
    the titles index's stemmer matches it."""
    return bool({term, term + "s", term + "es", term.removesuffix("s")} & title)


def fold_latin(word: str) -> str:
    """Accents off Latin letters, as remove_diacritics does ("zürich" -> "zurich");
    other scripts are left alone (FTS5 folds only Latin)."""
    out = []
    for ch in word:
        if ord(ch) < 0x80:
            out.append(ch)
            continue
        parts = unicodedata.normalize("NFD", ch)
        out.append(parts[0] if len(parts) > 1 and ord(parts[0]) < 0x250 else ch)
    return "".join(out)


def words(text: str) -> list[str]:
    """Every word of text as the index keys it: lower-cased, Latin accents folded."""
    return [fold_latin(w.lower()) for w in _WORD.findall(text)]


def clauses(text: str) -> list[str]:
    """text's clauses, split at punctuation: "good morning, what do I do today?" is a
    greeting and a question, and the small-talk rules judge each."""
    return CLAUSE.split(text)


def _asking_cut(text: str) -> str:
    """text less what only says how it asks: the measure of "how old" and "give me"."""
    return _GIVE_ME.sub(" ", _MEASURE.sub(r"\1", text))


def query_terms(text: str) -> list[str]:
    """The topic words of a question: its words less the stopwords, deduplicated, in
    order of first appearance; the measure of "how old" is not one, nor "give me"."""
    text = _asking_cut(text)
    return list(dict.fromkeys(w for w in words(text) if w not in STOPWORDS))


def phrases(text: str, keep: Iterable[str]) -> list[list[str]]:
    """The runs of adjacent words of text (as query_terms reads it) that are all in keep,
    in order: "what is my blood type?" with keep {blood, type} is [[blood, type]]; a
    word not kept ("my", "'s"), or capitalised inside the text (a name), ends a run."""
    keep, runs, run = set(keep), [], []
    for i, raw in enumerate(_WORD.findall(_asking_cut(text))):
        w = fold_latin(raw.lower())
        if w in keep and not (i and raw[0].isupper()):  # a name ("the Skoda") is no part of a compound
            run.append(w)
        elif run:
            runs.append(run)
            run = []
    return [*runs, run] if run else runs


# A day named in a question ("3 December", "Dec 3rd", "the 15th of February 2027"): its
# daily page is titled the Roam way ("December 3rd, 2026", readers.model.day_title),
# which shares only the month with how people write the day.
_MONTH_NUMBERS = {
    **{name.lower(): i for i, name in enumerate(calendar.month_name) if name},
    **{name.lower(): i for i, name in enumerate(calendar.month_abbr) if name},
    "sept": 9,
}
_MONTH_NAME = "|".join(sorted(_MONTH_NUMBERS, key=len, reverse=True))
_DAY = r"(\d{1,2})(?:st|nd|rd|th)?"
_DAY_MENTION = re.compile(
    rf"\b(?:(?:the\s+)?{_DAY}\s+(?:of\s+)?({_MONTH_NAME})|({_MONTH_NAME})\.?\s+(?:the\s+)?{_DAY})\b(?:,?\s+(\d{{4}})\b)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class DayMention:
    start: int  # where in the text
    end: int
    month: int
    day: int
    year: int | None  # None: not said


def day_mentions(text: str) -> list[DayMention]:
    """The days a text names, in order ("what did I do on 3 December?")."""
    found = []
    for m in _DAY_MENTION.finditer(text):
        day = int(m.group(1) or m.group(4))
        month = _MONTH_NUMBERS[(m.group(2) or m.group(3)).lower()]
        year = int(m.group(5)) if m.group(5) else None
        if 1 <= day <= calendar.monthrange(year or 2024, month)[1]:  # 2024: a leap year
            found.append(DayMention(m.start(), m.end(), month, day, year))
    return found


_POSSESSIVE = re.compile(r"([^\W_]+)['\u2019]s(?![^\W_])|([^\W_]+s)['\u2019](?![^\W_])")


def possessors(text: str) -> list[str]:
    """The topic words a question names as an owner ("mum" in "when is my mum's
    birthday?", "tomasz" in "Tomasz's address"); "what's", "it's" are not (stopwords)."""
    return query_terms(" ".join(m.group(1) or m.group(2) for m in _POSSESSIVE.finditer(text)))


# "which platform ...?", "what's the rent ...?": the noun that opens the question names
# what it asks for, after the question word and a determiner ("what's the", "which of" is not one).
_HEAD_NOUN = re.compile(
    r"^\W*(?:(?:and|so|ok),? )?(?:which|what)(?:['\u2019]s| is| was| are| were)?\s+"
    r"(?:(?:the|my|our|your|a|an|his|her|their)\s+)?([^\W\d_]+)\b(?!['\u2019]s)",
    re.IGNORECASE,
)


def is_compound_of(word: str, head: str) -> bool:
    """Whether word is a compound whose last part is head ("walnuts" of "nuts", "Mondays" of
    "days"): English puts a compound's head last, after a part of three letters or more."""
    return len(word) - len(head) >= 3 and word.endswith(head)


def is_abbreviation_of(word: str, term: str) -> bool:
    """Whether word is how notes may shorten term ("ref" of "reference", "temp"): its first
    three letters or more, three or more short of it (Vocabulary also asks it be rarer)."""
    return len(word) >= 3 and len(term) - len(word) >= 3 and term.startswith(word)


def head_noun(question: str) -> str | None:
    """The word a "which N" or "what's the N" question asks for, where it is a topic word
    ("platform" of "which platform does the train leave from?", "rent" of "what's the rent
    at the new office?"); None for any other question ("what did I ...", "which of them")."""
    found = _HEAD_NOUN.match(question)
    word = fold_latin(found.group(1).lower()) if found else None
    return word if word is not None and word not in STOPWORDS else None


_NAMED_DATE = re.compile(
    rf"\b(?:{_MONTH_NAME}|christmas|easter|halloween|(?:19|20)\d\d)\b",
    re.IGNORECASE,
)


def named_dates(question: str) -> list[str]:
    """The topic words that name when a question asks it of: a month, a holiday, a year
    ("christmas" in "what was the sea temperature on Christmas Day?", "2026" in "how much
    honey did I get in 2026?"); not a weekday, which a day's page does not say in its title."""
    found = (
        m
        for m in _NAMED_DATE.finditer(question)
        if m.group(0) != "may" and not (m.start() == 0 and m.group(0) == "May")
    )
    return query_terms(" ".join(m.group(0) for m in found))  # "May", not the "may" of "may I ask"


def _going_on(text: str) -> str:
    """text, lower-cased, less the closers it opens with ("ok. and its plot" -> "and its
    plot"): an acknowledgement before a follow-up does not close the topic."""
    return _LEADING_CLOSERS.sub("", text.strip().lower())


def _closes(text: str) -> bool:
    """Whether a message closes the topic: it says a closer ("thanks, that's all") and
    does not go on with "and ..." or "what about ..." after the ones it opens with."""
    return bool(set(words(text)) & CLOSERS) and not _going_on(text).startswith(CONTINUERS)


def refers_back(text: str) -> bool:
    """Whether a message has an anaphor ("who teaches it?", "when does she start?"), or is a
    fragment whose subject can only be the topic ("starting when?": FRAGMENTS), and does
    not close the topic ("thanks, that's all"; "ok, and who teaches it?" goes on)."""
    said = words(text)
    fragment = FRAGMENTS and len(said) == 2 and len(set(said) & QUESTION_WORDS) == 1
    return (bool(set(said) & ANAPHORS) or fragment) and not _closes(text)


def is_elliptical(text: str) -> bool:
    """Whether a message is a bare continuation, "and nuts?" or "what about bikes?": it opens
    with "and"/"what about" and asks no question of its own ("and what's my blood type?"
    does), so it can only mean the conversation's topic."""
    lowered = text.strip().lower()
    opener = next((c for c in CONTINUERS if lowered.startswith(c)), None)
    return opener is not None and not set(words(lowered[len(opener) :])) & (QUESTION_WORDS | CLOSERS)


def is_follow_up(text: str) -> bool:
    """Whether a message continues the conversation's topic: it refers back, or opens
    with "and"/"what about" ("and Marta's birthday?")."""
    return refers_back(text) or _going_on(text).startswith(CONTINUERS)  # going on never closes


def quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def match_expression(terms: Iterable[str]) -> str:
    """FTS5 MATCH text: the terms ORed, each a quoted string (no FTS5 syntax survives)."""
    return " OR ".join(map(quoted, terms))


def title_expression(alternatives: Iterable[Iterable[str]]) -> str:
    """FTS5 MATCH text for blocks whose page title holds one word of every group."""
    groups = ["(" + " OR ".join(map(quoted, group)) + ")" for group in alternatives]
    return "page : (" + " AND ".join(groups) + ")"


def specificity(term: str) -> float:
    """How much a word says about the topic: 7 less its Zipf frequency in English
    (wordfreq: "the" ~7.7, "number" 5.6, "boiler" 3.7), so "any idea about the boiler
    service?" is about the boiler; a word English does not know (a typo, a rare name)
    gets UNKNOWN_SPECIFICITY. The notes' own counts cannot tell this in a small graph,
    where every word is rare."""
    zipf = zipf_frequency(term, "en")
    return max(0.5, 7.0 - zipf) if zipf > 0 else UNKNOWN_SPECIFICITY


_COUNTED = re.compile(r"\bhow\s+(?:many|much)\s+([^\W_]+)", re.IGNORECASE)


def counted_word(question: str, asked: Iterable[str]) -> str | None:
    """What a count asks the number of, where it is one of the asked words: "altos" in "how
    many altos are in the choir?", "salt" in "how much salt goes in the dal?"; None for
    "how much is the fee?" (no noun follows) or no count."""
    found = _COUNTED.search(question)
    word = fold_latin(found.group(1).lower()) if found else None
    return word if word in set(asked) else None


def is_known(term: str) -> bool:
    """Whether English knows term (wordfreq has it): not a typo, nor a rare name."""
    return zipf_frequency(term, "en") > 0


def fuse(lists: list[tuple[float, list[tuple]]]) -> list[tuple]:
    """Reciprocal-rank fusion of ranked (id, page, text, position, rank) rows: rows as
    (id, page, text, position, fused score), best first, ties in the first list's order."""
    scores: dict[int, float] = {}
    rows: dict[int, tuple] = {}
    for weight, ranked in lists:
        for rank, row in enumerate(ranked, start=1):
            scores[row[0]] = scores.get(row[0], 0.0) + weight / (RRF_K + rank)
            rows.setdefault(row[0], row)
    order = sorted(scores, key=lambda i: -scores[i])
    return [(*rows[i][:4], round(scores[i] * RRF_K, 4)) for i in order]


_INFLECTION = re.compile(r"(?:ed|ing)$")
# Family words: people title a page "Dad" or "Mam" and ask about "my father", write
# "married to" and ask for a husband. Each group is one relation, as English says it.
_KIN_GROUPS = (
    "father dad daddy papa",
    "mother mum mam mom mommy mummy mammy",
    "grandmother grandma granny gran nan nana",
    "grandfather grandad granddad grandpa gramps",
    "sibling sister brother",
    "spouse husband wife partner married",
    "child children kid kids son daughter twins",
)
KIN = {w: tuple(o for o in g.split() if o != w) for g in _KIN_GROUPS for w in g.split()}


class Vocabulary:
    """The notes' own words with their block counts, for the two rules above."""

    def __init__(self, df: Mapping[str, int]) -> None:
        self.df = dict(df)
        self._words = list(self.df)

    def is_misspelt_asking(self, term: str) -> bool:
        if term in self.df or term.isdigit():
            return False
        if len(term) == 1:
            return True
        return (
            len(term) >= 3
            and zipf_frequency(term, "en") < COMMON_WORD  # "key" is a word, not a misspelt "hey"
            and process.extractOne(term, _LONG_STOPWORDS, scorer=OSA.distance, score_cutoff=1) is not None
        )

    def neighbours(self, term: str) -> list[str]:
        """The notes' words a word they never use may mean, most frequent first."""
        if term in self.df or term.isdigit():
            return []
        kin = [w for w in KIN.get(term, ()) if w in self.df]
        if len(term) < 4:
            return kin
        cutoff = 1 if len(term) <= 7 else 2
        found = process.extract(term, self._words, scorer=OSA.distance, score_cutoff=cutoff, limit=20)
        near = {w for w, _, _ in found}
        if zipf_frequency(term, "en") >= COMMON_WORD:  # a word form ("grow" -> "grew"), not a typo
            near = {w for w in near if w[:2] == term[:2]}  # ("pension" -> "tension", "wear" -> "pear")
        if len(term) >= 5:
            stem = term[:-1]
            # inside a compound ("bookshelves"), or an inflection ("shelves"); not the
            # start of a longer word ("boiler" -> "boilerplate")
            near.update(
                w
                for w in self._words
                if len(w) > len(term) and (stem in w[1:] or (w.startswith(stem) and len(w) - len(stem) <= 3))
            )
            # a past or -ing form the notes write as another form of the verb or its
            # noun ("weighed" -> weight, weighs; "walking" -> walks)
            base = _INFLECTION.sub("", term)
            if base != term and len(base) >= 4:
                near.update(w for w in self._words if w != term and w.startswith(base) and len(w) - len(base) <= 2)
        if ABBREVIATIONS:  # one the notes write ("ref" for "reference", "temp"): shorter and rarer
            zipf = zipf_frequency(term, "en")
            near.update(w for w in self._words if is_abbreviation_of(w, term) and zipf_frequency(w, "en") < zipf)
        ranked = sorted(near, key=lambda w: (-self.df[w], w))[:MAX_NEIGHBOURS]
        # A compound the notes write as two words ("bookclub" -> the phrase "book club").
        split = [
            f"{term[:i]} {term[i:]}" for i in range(3, len(term) - 2) if term[:i] in self.df and term[i:] in self.df
        ]
        return split[:1] + kin + [w for w in ranked if w not in kin]

"""A fact question's answer where it asks no kind of answer: a line, a clause, a value.

"who plays the cello?" is answered with the one line of the best block that says its
words (best_line); "is breakfast included?" with the clause of it that does (best_clause);
"what's the status of X?" with the value of its `status:` line (asked_value, a name where
the value names something and says what it is); "what's the booking reference?" with what
the line says right after those words (echoed_value); "which pears do I use?" with the pears
it says and the word that says which (which_one); "which of them ...?" with the one its
line is about (which_member); "what am I bringing?" with what follows the verb (what_object);
"why ...?" with the reason (reason). No model: the span head (bytechat.serve.span_answer) answers the questions that ask a kind
(a date, an amount, a name). Each is measured in docs/chat.md.
"""

from __future__ import annotations

import re

from rapidfuzz import fuzz

from bytechat.notes import answer_kinds
from bytechat.notes.answer_kinds import IN_THE_NOTES
from bytechat.notes.query import (
    STOPWORDS,
    fold_latin,
    head_noun,
    is_abbreviation_of,
    is_compound_of,
    query_terms,
    specificity,
    words,
)

# Whether a fact question that asks no kind of answer ("which pears ...?", "is breakfast
# included?") is answered with the one line of the best block that says its words, where
# the block has several lines and one of them says more of the question's words than any
# other (best_line). Measured in docs/chat.md ("One line of the block").
LINE_ANSWERS = True
# Whether a yes/no question is answered with the clause of its line that says its words
# (best_clause). Measured in docs/chat.md ("A yes or a no, said").
YES_NO_CLAUSES = True
# ... but not a request ("could you check the budget?") nor one for a note ("is its plan in
# there too?": in the notes, answered with the note whole)
_YES_NO = re.compile(
    r"^\W*(?:is|are|was|were|can|could|should|do|does|did|will|would|has|have|had)\b(?! you\b)(?!.*\bin there\b)", re.I
)
_CLAUSE_END = re.compile(r"[,;]\s+|(?<=[.!?])\s+")
# Whether a question for a key's value ("what's the status of X?") is answered with the
# value of the `key: value` line it asks (asked_value). Measured in docs/chat.md ("The value asked").
KEY_VALUES = True
# Whether a question is answered with the value its line says right after the question's
# words ("booking reference HVH-55821", echoed_value). Measured in docs/chat.md ("The value after
# the words asked").
ECHOED_VALUES = True
# Whether a value that names something and then says what it is ("Spaarnestem, a mixed choir of
# about 40 singers") is answered with the name.
APPOSITIONS = True
_APPOSITION = re.compile(r"^([A-Z][^,;]*?), (?:a|an|the) ")
# Whether a "which N" question ("which pears do I use?") is answered with the N the line says,
# with the word that says which ("Conference pears"), or the compound that is one ("walnuts").
WHICH_ONE = True
_WHICH = re.compile(r"^\W*(?:(?:and|so|ok),? )?(?:which|what) (?!is\b|are\b|was\b|were\b|the\b|my\b)", re.I)
# Whether "which of them ...?" / "which one ...?" is answered with the one its line is about:
# the name (or named thing, "Hive 1") it opens with ("Noor is scared of dogs" -> Noor).
WHICH_MEMBER = True
_WHICH_OF = re.compile(r"^\W*(?:(?:and|so|ok),? )?which (?:one\b|of\b)", re.I)
_OPENING_NAME = re.compile(r"^([A-Z][^\W_]*(?: (?:[A-Z][^\W_]*|\d+))*)(?=:| \(|,| (?:is|are|was|were|has|had)\b)")
# Whether "what am I bringing ...?" / "what did I put on hive 2?" is answered with what the line
# says after that verb ("Bring snacks" -> snacks, "put fondant on hive 2" -> fondant).
WHAT_OBJECTS = True
_WHAT_I = re.compile(
    r"^\W*(?:(?:and|so),? )?what (?:am|are|was|were|do|did|should|must|will|have|had) (?:i|we)"
    r"(?: (?:still|usually|always|need to|have to|want to|got to|going to))* ([^\W\d_]+)",
    re.I,
)
_NEGATED = re.compile(r"(?:n['\u2019]?t|\bnot|\bnever|\bno)\s+$", re.I)  # "doesn't drink alcohol" says no drink
_PLACE_OR_TIME = re.compile(r" (?:on|in|at|for|to|with|by|from) ")
# Whether a "why" question is answered with the reason its line gives ("about the rattle ...",
# "or they go soggy") or, where it names none, the clause that does not say the question's
# words ("Move the mint to its own pot, it takes over everything").
REASONS = True
_WHY = re.compile(r"^\W*(?:(?:and|so|but),? )?why\b", re.I)
_REASON = re.compile(r"\b(?:because|since|so that|so|or|about|otherwise)\s+(.+?)(?=[,;]\s|[.!?](?:\s|$)|$)", re.I)
_KEY_VALUE = re.compile(r"^([^:\n]{1,40}): ([^\n]+)$")
_WORD = re.compile(r"[^\W_]+")


def topic(asked: str, entry: str) -> list[str]:
    """The question's topic words less those of the page's title (every line is of the page)."""
    title = set(words(entry[1 : entry.index("] ")]))
    return [t for t in query_terms(asked) if t not in title]


_STEM = re.compile(r"(?<=\w{4})(?:es|s|ed|ing)$")  # English's inflections, off a stem of 4 letters or more


def says(term: str, word: str) -> bool:
    """Whether a block's word says a question's term: the same word, a form of it
    ("trams" for "tram", "arranged" for "arrange", "nurses" for "nursing": one stem), or
    the word a typo meant."""
    if term == word or _STEM.sub("", term) == _STEM.sub("", word) != "":
        return True
    short, long = sorted((term, word), key=len)
    if len(short) >= 4 and long.startswith(short) and len(long) - len(short) <= 3:
        return True
    return min(len(term), len(word)) >= 4 and fuzz.ratio(term, word) >= 80  # 4 letters: a letter left out


def best_line(asked: str, entry: str) -> str | None:
    """The line of entry (`[Page] text`, child lines indented below it) that says the most
    of the question's topic words, each weighted by its specificity (a rare word says more
    than "time"), where the entry has several lines and that one says more than every
    other; the words of the page's title say nothing here (every line is of the page).
    None where no line stands out. A line, not a sentence: "what did I note about
    'obvious'?" asks for the note, "Put the sensor far from anything warm. Obvious in
    hindsight.", not its last sentence."""
    text = entry.split("] ", 1)[1]
    lines = [line.strip() for line in text.split("\n") if line.strip()]
    terms = topic(asked, entry)
    if len(lines) < 2 or not terms:
        return None
    scores = []
    for line in lines:
        said = set(words(line))
        scores.append(sum(specificity(t) for t in terms if any(says(t, w) for w in said)))
    first, second = sorted(range(len(lines)), key=lambda i: -scores[i])[:2]
    return lines[first] if scores[first] > scores[second] else None


def best_clause(asked: str, text: str) -> str | None:
    """For a yes/no question ("is breakfast included?", "can I freeze it?", "should I knead
    it?"), the clause of text (one line; clauses end at "," ";" or a sentence's end) that
    says more of the question's words than every other: the answer's evidence, as a person
    would say it ("breakfast included", "never knead it"). None for any other question, a
    text of several lines or one clause, or where no clause stands out."""
    if not _YES_NO.match(asked) or IN_THE_NOTES.search(asked) or "\n" in text.strip():
        return None
    clauses = [c.strip() for c in _CLAUSE_END.split(text.strip()) if c.strip()]
    terms = query_terms(asked)
    if len(clauses) < 2 or not terms:
        return None
    scores = [sum(specificity(t) for t in terms if any(says(t, w) for w in words(c))) for c in clauses]
    first, second = sorted(range(len(clauses)), key=lambda i: -scores[i])[:2]
    return clauses[first] if scores[first] > scores[second] else None


def asked_value(asked: str, text: str) -> str | None:
    """The value of a `key: value` line whose key the question asks for, every word of it
    ("what was the status of The Midnight Library?" -> `finished` of `status: finished`,
    "what is the plot number?" -> `14, next to the water tap` of `plot: 14, ...`); None for
    any other line, several lines, or a question for a note."""
    found = _KEY_VALUE.match(text.strip())
    if found is None or IN_THE_NOTES.search(asked):
        return None
    terms, key = query_terms(asked), query_terms(found.group(1))
    if not key or not all(any(says(t, k) for t in terms) for k in key):
        return None
    value = found.group(2).strip()
    named = _APPOSITION.match(value) if APPOSITIONS else None
    return named.group(1) if named else value  # "Spaarnestem, a mixed choir ...": its name


_VALUE_AFTER = re.compile(r"(?::\s*|\s+(?:is|are|was|=|-)\s+|\s+)([0-9A-Z€$£#][^,;()\n]*?)(?=[,;()\n]|[.!?](?:\s|$)|$)")


def echoed_value(asked: str, text: str) -> str | None:
    """What a line says right after the words a question asks for ("booking reference
    HVH-55821", "booking ref KX7P2M" for "what's the booking reference ...?"): a value that
    opens with a digit, a capital or a currency sign and runs to its clause's end, after two
    or more of the question's words side by side, or the one it asks for ("which/what's the
    N"). None where the line says no such run or no such value."""
    if IN_THE_NOTES.search(asked):
        return None  # "its baking experiment, is that written down?" asks for the note
    terms = [t for t in query_terms(asked) if specificity(t) >= 1.5]
    head = head_noun(asked)
    line = text.strip()
    found = None
    for m in _WORD.finditer(line):
        run, at = [], m.start()
        for w in _WORD.finditer(line, at):
            if w.start() != at or not any(
                says(t, fold_latin(w.group(0).lower())) or is_abbreviation_of(w.group(0).lower(), t) for t in terms
            ):
                break
            run.append(w)
            at = w.end() + 1 if line[w.end() : w.end() + 1] == " " else -1
        if len(run) >= 2 or (run and head is not None and says(head, fold_latin(run[0].group(0).lower()))):
            value = _VALUE_AFTER.match(line, run[-1].end())
            if value and value.group(1).strip():
                found = value.group(1).strip()
    return found


def which_one(asked: str, text: str) -> str | None:
    """For "which N ...?" or "what N ...?", the N a line says with the word before it that says
    which ("Conference pears" of "6 ripe Conference pears", "lime tree" of "mostly lime
    tree"), or a compound whose head N is ("walnuts" for "what nuts"); None where the line
    says no N, or says it first or after a number or a word that only joins."""
    head = head_noun(asked)
    if head is None or not _WHICH.match(asked):
        return None
    found = list(_WORD.finditer(text))
    for i, w in enumerate(found):
        word = fold_latin(w.group(0).lower())
        if is_compound_of(word, head):
            return w.group(0)
        if says(head, word) and i > 0:
            before = found[i - 1]
            said = fold_latin(before.group(0).lower())
            if text[before.end() : w.start()] == " " and not said.isdigit() and said not in STOPWORDS:
                return text[before.start() : w.end()]
    return None


def which_member(asked: str, text: str) -> str | None:
    """For "which of them ...?" or "which one ...?", the name a one-line text opens with, as
    its subject: `Noor` of "Noor is scared of dogs, Sem wants one", `Kuba` of "Kuba (5),
    obsessed with trams", `Hive 1` of "Hive 1: marked blue"; None for any other question or
    a text that opens with no name."""
    line = text.strip()
    if not _WHICH_OF.match(asked) or "\n" in line:
        return None
    found = _OPENING_NAME.match(line)
    return found.group(1) if found else None


def what_object(asked: str, text: str) -> str | None:
    """For "what am I bringing ...?" or "what did I put on hive 2?", what a one-line text says
    right after a form of that verb, not negated, to its clause's end, less a place or time the
    question says already: `snacks` of "Bring snacks, he has the wine", `fondant` of "put
    fondant on hive 2". None for any other question, or where the text says no such object."""
    found = _WHAT_I.match(asked)
    line = text.strip()
    if not found or "\n" in line:
        return None
    verb = fold_latin(found.group(1).lower())
    asked_words = set(words(asked))
    tokens = list(_WORD.finditer(line))
    for w in tokens:
        said = fold_latin(w.group(0).lower())
        if not says(verb, said) or _NEGATED.search(line[: w.start()]):
            continue
        rest = re.split(r"[,;:()]|[.!?](?:\s|$)", line[w.end() :], maxsplit=1)[0]
        for cut in _PLACE_OR_TIME.finditer(rest):  # "fondant on hive 2": the question says where
            if set(words(rest[cut.end() :])) <= asked_words:
                rest = rest[: cut.start()]
                break
        rest = rest.strip()
        if rest and (rest[0].islower() or rest[0].isdigit()) and len(rest.split()) <= 6:
            return rest
    return None


def reason(asked: str, text: str) -> str | None:
    """For a "why" question, the reason a one-line text gives: what follows "because", "so",
    "or", "about" ... to its clause's end, or else its one clause that says none of the
    question's words where another says some. None for any other question or text."""
    line = text.strip()
    if not _WHY.match(asked) or "\n" in line:
        return None
    given = _REASON.search(line)
    if given:
        return given.group(1).strip()
    clauses = [c.strip() for c in _CLAUSE_END.split(line) if c.strip()]
    terms = query_terms(asked)
    said = [any(says(t, w) for t in terms for w in words(c)) for c in clauses]
    unsaid = [c for c, s in zip(clauses, said) if not s]
    return unsaid[0].rstrip(".!") if len(unsaid) == 1 and any(said) else None


def line_answer(asked: str, best: str, steps: bool = False) -> str | None:
    """The answer to a question that asks no kind, from the best block shown (`[Page] text`):
    the first of a reason, the one of a group, the value after the words asked, which one,
    what was done, that its line or clause says; else a key's value, the yes/no clause or the
    line; None where none stands out. steps: the question asks how to do something
    (answered with the block whole)."""
    asked = answer_kinds.as_typed(asked) if answer_kinds.TYPED_ASKING else asked  # "wich chocolate" asks which
    text = best.split("] ", 1)[1]
    line = best_line(asked, best) if LINE_ANSWERS and not steps else None
    clause = best_clause(asked, line or text) if YES_NO_CLAUSES else None
    told = clause or line or text
    value = asked_value(asked, told) if KEY_VALUES else None
    rules = (  # each reads the line (or a key's value: "excess €85"), the first that answers wins
        (REASONS, reason, told),
        (WHICH_MEMBER, which_member, told),
        (ECHOED_VALUES, echoed_value, value or told),
        (WHICH_ONE, which_one, value or told),
        (WHAT_OBJECTS, what_object, told),
    )
    for on, rule, said in rules:
        found = rule(asked, said) if on else None
        if found:
            return found
    return value or clause or line

"""Training questions and the sentences that answer them, by question type.

A block's slot (bytechat.notes.dialogues.asking.slots: attribute, when, count, todo, keyword) is
asked with a question of a finer type, read off its key and value:

    when       birthday, deadline, dates; "bought", "started", "finished" with a date
    count      a count ("hives: 3"), or what a recipe serves
    who        an owner, author, lead; "lent by", "recommended by"
    where      a location, address, hotel; "lives in"
    relation   how the person is related to you ("my manager since March 2025")
    what       any other attribute
    yes/no     "Do I have the phone for Jonas somewhere?": "Yes. ..." and the fact

and answered by a short sentence that says the span (bytechat.notes.dialogues.spans) and
names the page: "Jonas's birthday is on 14 February.", "You have 3 hives, according to
your Bees notes.", "Priya is your manager since March 2025." Every frame comes in a few
variants; the words around the span are the template's, the span is the block's.

Each frame is tagged by where the span sits: "name" (the page named first, the span at
the end) or "value" (the span first, the page after it). tools/copy_levers.py measures
the orders on pages never trained on (docs/notes.md, "Answers, not echoes"); STYLE
picks which the dialogues use: "value", the best measured ("mixed": all, "value1": one
span-first frame per type).
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

from bytechat.notes.dialogues.spans import clause, date_preposition, ended, open_todos, sentence_with, value_span, yours

STYLE = "value"  # mixed | name | value | value1: measured with tools/copy_levers.py --frames (docs/notes.md)

# ------------------------------------------------------------------ question types by key
RELATION_KEYS = ("relation", "relationship")
LIVES_KEYS = ("lives in", "lives", "home town", "hometown")
WHO_KEYS = (
    "owner",
    "author",
    "lead",
    "who",
    "with",
    "contact",
    "manager",
    "host",
    "teacher",
    "coach",
    "partner",
    "doctor",
    "mentor",
    "organiser",
    "organizer",
    "editor",
    "director",
    "landlord",
)
WHERE_KEYS = ("where", "location", "address", "hotel", "venue", "place", "kept", "room", "station", "shop")
DATE_NOUNS = ("birthday", "deadline", "date", "dates", "due", "anniversary", "appointment", "when")
DATE_VERBS = {  # past tense as noted -> the question's verb ("When did I buy ...?")
    "bought": "buy",
    "started": "start",
    "finished": "finish",
    "last made": "last make",
    "renewed": "renew",
    "planted": "plant",
    "sowed": "sow",
    "joined": "join",
    "moved": "move",
    "booked": "book",
    "visited": "visit",
    "registered": "register",
}
COUNT_VERBS = ("serves", "sleeps", "seats", "makes", "feeds")
KNOWN_KEYS = frozenset(
    (*RELATION_KEYS, *LIVES_KEYS, *WHO_KEYS, *WHERE_KEYS, *DATE_NOUNS, *DATE_VERBS, *COUNT_VERBS, "born", "since")
    + ("name", "status", "type", "tags", "phone", "email", "price", "rating", "budget", "goal", "time", "serial")
)

# ------------------------------------------------------------------ training questions
WHO_QUESTIONS = ("Who is the {key} of {title}?", "who's the {key} for {title}?", "Who's {title}'s {key}?")
BY_QUESTIONS = ("Who was {title} {key}?", "who was {title} {key}?")  # "lent by", "recommended by"
WHERE_QUESTIONS = ("Where is the {key} for {title}?", "where's {title}'s {key}?", "Where's the {key} of {title}?")
LIVES_QUESTIONS = ("Where does {title} live?", "where does {title} live now?", "Which town does {title} live in?")
RELATION_QUESTIONS = (
    "What's {title}'s relation to me?",
    "how am I related to {title}?",
    "What is my relationship with {title}?",
)
DATE_VERB_QUESTIONS = ("When did I {verb} {title}?", "when did I {verb} {title}", "What date did I {verb} {title}?")
BORN_QUESTIONS = ("When was {title} born?", "when was {title} born")
SINCE_QUESTIONS = ("Since when have I had {title}?", "How long have I had {title}?")
COUNT_VERB_QUESTIONS = ("How many does {title} {verb}?", "how many people does {title} {verb}?")
YES_NO_QUESTIONS = (
    "Do I have the {key} for {title} somewhere?",
    "Did I note down the {key} of {title}?",
    "Is {title}'s {key} in my notes?",
    "Have I got a {key} for {title}?",
)
QUESTION_TEMPLATES = {  # the families a test checks against the eval's held-out ones
    "who": WHO_QUESTIONS + BY_QUESTIONS,
    "where": WHERE_QUESTIONS + LIVES_QUESTIONS,
    "relation": RELATION_QUESTIONS,
    "when": DATE_VERB_QUESTIONS + BORN_QUESTIONS + SINCE_QUESTIONS,
    "count": COUNT_VERB_QUESTIONS,
    "yes_no": YES_NO_QUESTIONS,
}

# ------------------------------------------------------------------ answer frames
# (tag, template): tag "name" puts the page first and the span last, "value" the span
# first. {span} is copied from the block; {your} is "your " for a value that starts
# with "my "; {pre} is a date's "on"/"in" (with its space) or "".
WHAT = (
    ("name", "The {key} for {title} is {your}{span}."),
    ("name", "{owner} {key} is {your}{span}."),
    ("name", "{Notes} give the {key} as {your}{span}."),
    ("name", "In your notes on {title}, the {key} is {your}{span}."),
    ("value", "It's {your}{span}, according to {notes}."),
    ("value", "It's {your}{span}. That's the {key} on {page}."),
)
WHEN_NOUN = (
    ("name", "{owner} {key} {is} {pre}{span}."),
    ("name", "The {key} for {title} {is} {pre}{span}."),
    ("name", "According to {notes}, the {key} {is} {pre}{span}."),
    ("value", "{Pre}{span}: that's the {key} on {page}."),
    ("value", "It's {pre}{span}, according to {notes}."),
)
WHEN_VERB = (
    ("name", "You {key} {title} {pre}{span}."),
    ("name", "According to your notes, you {key} {title} {pre}{span}."),
    ("value", "{Pre}{span}, according to {notes}."),
)
BORN = (
    ("name", "{title} was born {pre}{span}."),
    ("value", "{Pre}{span}, according to {notes}."),
)
SINCE = (
    ("name", "You've had {title} since {span}."),
    ("value", "Since {span}, according to {notes}."),
)
COUNT = (
    ("name", "{Notes} say you have {span} {key}."),
    ("name", "According to {title}, you have {span} {key}."),
    ("value", "{span} {key}, according to {notes}."),
    ("value", "You have {span} {key}. That's from {page}."),
)
COUNT_VERB = (
    ("name", "{title} {key} {span}."),
    ("value", "It {key} {span}, according to {notes}."),
)
WHO = (
    ("name", "The {key} of {title} is {span}."),
    ("name", "According to your notes, the {key} of {title} is {span}."),
    ("value", "{span} is the {key} of {title}."),
    ("value", "It's {span}, according to {notes}."),
)
BY = (
    ("name", "{title} was {key} {span}."),
    ("value", "{span}, according to {notes}."),
)
WHERE = (
    ("name", "The {key} for {title} is {your}{span}."),
    ("name", "{Notes} give the {key} as {your}{span}."),
    ("value", "It's {your}{span}, according to {notes}."),
)
LIVES = (
    ("name", "{title} lives in {span}."),
    ("name", "According to your notes, {title} lives in {span}."),
    ("value", "In {span}, according to {notes}."),
)
RELATION = (
    ("name", "{title} is your {span}."),
    ("name", "According to your notes, {title} is your {span}."),
    ("value", "Your {span}: that's {title}."),
)
YES = ("Yes. ", "Yes: ", "Yes, it's there. ")
TODO_ONE = (
    ("name", "Still open for {title}: {todo}"),
    ("name", "On {title}, one thing is left to do: {todo}"),
    ("name", "Your open todo for {title}: {todo}"),
    ("value", "{todo} That's still open on {page}."),
)
TODO_MANY = (
    ("name", "Still open for {title}:\n{items}"),
    ("name", "{count} open todos on {title}:\n{items}"),
    ("name", "For {title}, you still have to do these:\n{items}"),
    ("value", "{items}\nThose are the open todos on {page}."),
)
GIST = (
    ("name", "{Notes} say: {sentence}"),
    ("name", "On {page}: {sentence}"),
    ("name", "You wrote this on {page}: {sentence}"),
    ("value", "{sentence} That's from {notes}."),
)
GIST_UNDER = (
    ("name", "Under {head} on {page}: {sentence}"),
    ("name", "{Notes}, under {head}: {sentence}"),
    ("value", "{sentence} That's under {head} on {page}."),
)
NUMBERS = {2: "Two", 3: "Three", 4: "Four", 5: "Five", 6: "Six"}
_PRONOUN_START = re.compile(r"^(?:a|an|the|your|my|our|his|her|their)\b", re.I)


@dataclass(frozen=True)
class Said:
    """A reply and the spans it copied from the notes (each a substring of a shown block)."""

    text: str
    spans: tuple[str, ...]


def title_fields(title: str) -> dict[str, str]:
    """How the frames name a page: "your Bees notes", or "your notes on The Dispossessed"
    for a title that starts with an article or is a date."""
    plain = not (title.startswith(("The ", "A ", "An ")) or any(ch.isdigit() for ch in title))
    notes = f"your {title} notes" if plain else f"your notes on {title}"
    page = f"your {title} page" if plain else f"your page on {title}"
    return {"title": title, "notes": notes, "Notes": notes[0].upper() + notes[1:], "page": page, "Page": "Y" + page[1:]}


def key_words(key: str) -> str:
    """A key as said inside a sentence: "Current goal" -> "current goal", "Birthday" ->
    "birthday" (a one-word key that is no common attribute, "Rust", may be a name and
    keeps its case)."""
    words = key.split()
    common = key.lower() in KNOWN_KEYS
    if (len(words) > 1 or common) and words[0][:1].isupper() and words[0][1:].islower():
        return key[0].lower() + key[1:]
    return key


def possessive(title: str) -> str | None:
    """ "Jonas's", "Bees'", or None for a title that reads badly with one (a date, a long one)."""
    if any(ch.isdigit() for ch in title) or len(title.split()) > 3:
        return None
    return title + ("'" if title.endswith("s") else "'s")


def question_type(kind: str, key: str, span: str) -> str:
    """The type of question an attribute slot is asked as (see the module docstring)."""
    low = key.lower()
    if kind == "count":
        return "count"
    if low in RELATION_KEYS:
        return "relation"
    if low in LIVES_KEYS:
        return "lives"
    if kind == "when" or (low in DATE_VERBS and date_preposition(span)):
        return "when"
    if low in WHO_KEYS or (low.endswith(" by") and not _PRONOUN_START.match(span)):
        return "who"
    if low in WHERE_KEYS:
        return "where"
    return "what"


def _pick(rng: random.Random, frames, style: str | None = None):
    """A frame of the style: all ("mixed"), page first ("name"), span first ("value"), or
    only the first span-first frame of each family ("value1": one frame per type)."""
    style = style or STYLE
    if style == "value1":
        return next((t for tag, t in frames if tag == "value"), frames[0][1])
    chosen = [t for tag, t in frames if style == "mixed" or tag == style] or [t for _, t in frames]
    return rng.choice(chosen)


def ask_attribute(
    kind: str, key: str, title: str, span: str, rng: random.Random, what: tuple[str, ...], yes_no: bool = True
) -> tuple[str, str, bool]:
    """(question, question type, whether it is a yes/no question) for an attribute slot;
    `what` holds the plain attribute templates (asking.TEMPLATES) it may use. yes_no
    False: never a yes/no question (a follow-up asks in its own words)."""
    qtype = question_type(kind, key, span)
    low = key.lower()
    fields = {"key": key, "title": title}
    if qtype == "relation":
        return rng.choice(RELATION_QUESTIONS).format(**fields), qtype, False
    if qtype == "lives":
        return rng.choice(LIVES_QUESTIONS).format(**fields), qtype, False
    if qtype == "who":
        options = BY_QUESTIONS if low.endswith(" by") else WHO_QUESTIONS
        return rng.choice(options).format(**fields), qtype, False
    if qtype == "where" and rng.random() < 0.6:
        return rng.choice(WHERE_QUESTIONS).format(**fields), qtype, False
    if qtype == "when" and low in DATE_VERBS:
        return rng.choice(DATE_VERB_QUESTIONS).format(verb=DATE_VERBS[low], title=title), qtype, False
    if qtype == "when" and low == "born":
        return rng.choice(BORN_QUESTIONS).format(**fields), qtype, False
    if qtype == "when" and low == "since":
        return rng.choice(SINCE_QUESTIONS).format(**fields), qtype, False
    if qtype == "count" and low in COUNT_VERBS:
        return rng.choice(COUNT_VERB_QUESTIONS).format(verb=low[:-1], title=title), qtype, False
    if rng.random() < 0.15 and yes_no:
        return rng.choice(YES_NO_QUESTIONS).format(**fields), qtype, True
    text = rng.choice(what).format(**fields)
    return text, qtype, yes_no and text.startswith(("Do ", "do ", "Did ", "Is ", "Have "))


def attribute_reply(qtype: str, key: str, title: str, value: str, rng: random.Random, yes: bool = False) -> Said:
    """The sentence that answers an attribute question of type qtype."""
    span = value_span(value)
    your, rest = yours(span)
    low = key.lower()
    pre = date_preposition(rest)
    owner = possessive(title)
    fields = {
        **title_fields(title),
        "key": key_words(key),
        "span": rest,
        "your": your,
        "owner": owner or "",
        "pre": f"{pre} " if pre else "",
        "Pre": f"{pre.capitalize()} " if pre else "",
        "is": "are" if low.endswith("s") and low not in ("status", "address", "this") else "is",
    }
    if qtype == "relation":
        frames = RELATION if not _PRONOUN_START.match(rest) or your else (("name", "{title} is {span}."),)
    elif qtype == "lives":
        frames = LIVES
    elif qtype == "who":
        frames = BY if low.endswith(" by") else WHO
    elif qtype == "where":
        frames = WHERE
    elif qtype == "count":
        frames = COUNT_VERB if low in COUNT_VERBS else COUNT
    elif qtype == "when" and low == "born":
        frames = BORN
    elif qtype == "when" and low == "since":
        frames = SINCE
    elif qtype == "when" and low in DATE_VERBS:
        frames = WHEN_VERB
    elif qtype == "when":
        frames = WHEN_NOUN
    else:
        frames = WHAT
    template = _pick(rng, frames)
    if owner is None and template.startswith("{owner}"):
        template = template.replace("{owner} {key}", "The {key} for {title}")
    text = template.format(**fields)
    if template.startswith("{your}") and your:
        text = "Y" + text[1:]
    if yes:
        text = rng.choice(YES) + text
    return Said(text, (rest,))


def _fit(text: str, room: int | None) -> bool:
    return room is None or len(text.encode("utf-8")) <= room


def _shortest(frames) -> str:
    return min((t for _, t in frames), key=len)


def todo_reply(title: str, block_text: str, rng: random.Random, room: int | None = None) -> Said:
    """The block's open TODOs: one in a sentence, several as a list (as many as fit room)."""
    todos = open_todos(block_text)
    fields = title_fields(title)
    template = _pick(rng, TODO_MANY)
    while len(todos) > 1:
        items = "\n".join(f"- {t}" for t in todos)
        text = template.format(**fields, items=items, count=NUMBERS.get(len(todos), str(len(todos))))
        if _fit(text, room):
            return Said(text, tuple(todos))
        todos = todos[:-1]
    todo = todos[0]
    text = _pick(rng, TODO_ONE).format(**fields, todo=ended(todo))
    if not _fit(text, room):
        text = _shortest(TODO_ONE).format(**fields, todo=ended(todo))
    return Said(text, (todo,))


def gist_reply(title: str, block_text: str, word: str, rng: random.Random, room: int | None = None) -> Said:
    """What a block says about word: the sentence that holds it, under its header line
    when it is a child line of a short one ("Feeding", "Gift ideas"); a sentence too long
    for room is cut to its first clause."""
    lines = block_text.split("\n")
    line = next((l.strip() for l in lines if word.lower() in l.lower()), lines[0].strip())
    sentence = sentence_with(line, word)
    head = lines[0].strip()
    under = line != head and len(head) <= 40 and ":" not in head
    options = GIST_UNDER if under else GIST
    fields = {**title_fields(title), "head": head}
    template = _pick(rng, options)
    text = template.format(**fields, sentence=ended(sentence))
    if not _fit(text, room):
        template = _shortest(options)
        frame = len(template.format(**fields, sentence="").encode("utf-8"))
        sentence = clause(sentence, max(24, room - frame - 1))
        text = template.format(**fields, sentence=ended(sentence))
    return Said(text, (sentence.rstrip(".!?"),) + ((head,) if under else ()))

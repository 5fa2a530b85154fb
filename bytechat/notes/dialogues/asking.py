"""What a note block can be asked: the question templates of the training dialogues, the
slots a block fills them with (`slots`: an attribute, its TODOs, a rare word, its page),
and the questions that come of them (`questions`; the eval asks the same slots in its own
words, bytechat.eval.phrasings). bytechat.notes.grounded writes the dialogues around them.
"""

from __future__ import annotations

import random
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bytechat.notes.blocks import TODO_LINE, NoteBlock
from bytechat.notes.dialogues.spans import KEY_VALUE
from bytechat.notes.query import query_terms

_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
RARE_WORD_BLOCKS = 3  # a keyword question's word occurs in at most this many blocks


@dataclass(frozen=True)
class Question:
    text: str
    gold: str  # the fact the answer must contain
    kind: str  # attribute | todo | page | keyword
    word: str = ""  # a keyword question's word (other blocks holding it answer it too)
    answer: str = ""  # the whole fact (gold is it clipped)


def title(page: str) -> str:
    """How a person names a page: its last path part ("Recipes/Miso Soup" -> "Miso Soup")."""
    return page.rsplit("/", 1)[-1]


def clip(text: str, n: int = 40) -> str:
    return text if len(text) <= n else text[:n].rstrip()


ATTRIBUTE_TEMPLATES = (
    "What's the {key} of {title}?",
    "What is the {key} for {title}?",
    "what's {title}'s {key}?",
    "Remind me, what is the {key} of {title}?",
    "{title}: {key}?",
    "Do I have the {key} for {title} somewhere?",
    "Look up the {key} of {title} for me.",
    "what {key} did I note for {title}",
)
WHEN_TEMPLATES = ("When is {title}'s {key}?", "when is the {key} for {title}?", "Remind me when {title}'s {key} is.")
COUNT_TEMPLATES = ("How many {key} do I have?", "how many {key} are there at {title}?", "Number of {key}?")
TODO_TEMPLATES = (  # each names the todos: "what's left to do" has no word to search for
    "What's still on my todo list for {title}?",
    "What todos do I have for {title}?",
    "any open todos on {title}?",
    "What's left on my {title} todo list?",
    "Remind me of my {title} todos.",
)
PAGE_TEMPLATES = (
    "What did I write about {title}?",
    "Summarise my page on {title}.",
    "what's in my notes on {title}?",
    "Tell me about {title}.",
    "What do my notes say about {title}?",
    "Anything on {title} in my notes?",
    "summarize {title}",
)
KEYWORD_TEMPLATES = (
    "What did I write about {word}?",
    "What do my notes say about {word}?",
    "Anything in my notes about {word}?",
    "Did I note anything on {word}?",
    "Find my note about {word}.",
    "{word}?",
)
WHEN_KEYS = ("birthday", "deadline", "date", "dates", "due", "bought", "born", "since", "when")
UNCOVERED_TOPICS = (
    "my passport number",
    "the dentist appointment",
    "my car insurance",
    "the wifi password",
    "my blood type",
    "the plumber's phone number",
    "my shoe size",
    "the tax return",
    "my gym membership",
    "the parking permit",
    "my bank PIN",
    "the vet appointment",
    "my library card",
    "the electricity meter reading",
    "my flight to Lisbon",
)
UNCOVERED_TEMPLATES = (
    "What did I write about {topic}?",
    "Where did I put {topic}?",
    "Remind me about {topic}.",
    "Do my notes say anything about {topic}?",
    "what's {topic}?",
)


@dataclass(frozen=True)
class Slot:
    """What a block can be asked: the kind of question, the words a template is filled
    with (key, title, word), and the fact that answers it."""

    kind: str  # attribute | when | count | todo | keyword | page
    fields: dict[str, str]
    answer: str  # the whole fact (eval scores the reply against it)
    word: str = ""  # a keyword slot's word

    @property
    def family(self) -> str:
        return "attribute" if self.kind in ("when", "count") else self.kind


TEMPLATES = {
    "attribute": ATTRIBUTE_TEMPLATES,
    "when": WHEN_TEMPLATES,
    "count": COUNT_TEMPLATES,
    "todo": TODO_TEMPLATES,
    "keyword": KEYWORD_TEMPLATES,
    "page": PAGE_TEMPLATES,
}


def slots(
    block: NoteBlock, rng: random.Random, word_counts: dict[str, int] | None = None, lead: bool | None = None
) -> list[Slot]:
    """Every question this block answers. lead: whether it is its page's lead block
    (blocks.lead_blocks), which page questions are answered with (default: position 0).
    rng breaks ties between equally rare keywords."""
    lines = block.text.split("\n")
    name = title(block.page)
    found: list[Slot] = []
    head = KEY_VALUE.match(lines[0])
    # An attribute question needs a search word beyond the page's title: "what's Weekly
    # Sync's who?" or "the plan for Half Marathon Plan" only name the page, and retrieval
    # answers those with the page's first blocks (see NotesIndex.search).
    if head and len(lines) == 1 and set(query_terms(head.group(1))) - set(query_terms(name)):
        key, value = head.group(1).strip(), head.group(2).strip()
        if value.split()[0].isdigit() and len(value.split()) == 1:
            kind = "count"
        elif key.lower() in WHEN_KEYS:
            kind = "when"
        else:
            kind = "attribute"
        found.append(Slot(kind, {"key": key, "title": name}, value))
    todos = [m.group(1) for m in map(TODO_LINE.match, lines) if m]
    if todos:
        found.append(Slot("todo", {"title": name}, todos[0].strip()))
    # Keyword questions: a word a person would search for (a query term that few blocks
    # share), not for a lone attribute (its key is on every page of that kind).
    if not (head and len(lines) == 1):
        body = " ".join(KEY_VALUE.sub(r"\2", line.strip()) for line in lines)
        counts = word_counts or {}
        words = [
            w
            for w in _WORD.findall(body)
            if query_terms(w) == [w.lower()]
            and w.lower() not in name.lower()
            and counts.get(w.lower(), 0) <= RARE_WORD_BLOCKS
        ]
        if words:
            word = min(words, key=lambda w: (counts.get(w.lower(), 0), rng.random()))
            line = next(l.strip() for l in lines if word in l)
            found.append(Slot("keyword", {"word": word.lower()}, line, word.lower()))
    if (block.position == 0) if lead is None else lead:
        found.append(Slot("page", {"title": name}, lines[0].strip()))
    return found


def questions(
    block: NoteBlock,
    rng: random.Random,
    word_counts: dict[str, int] | None = None,
    lead: bool | None = None,
    templates: dict[str, Sequence[str]] = TEMPLATES,
) -> list[Question]:
    """Every question this block answers, one random template each (from templates, by
    slot kind: the training dialogues use TEMPLATES; the eval its own, bytechat.eval.phrasings)."""
    return [
        Question(rng.choice(templates[s.kind]).format(**s.fields), clip(s.answer), s.family, s.word, s.answer)
        for s in slots(block, rng, word_counts, lead)
    ]


def word_counts(blocks: Sequence[NoteBlock]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for block in blocks:
        for w in set(_WORD.findall(block.text.lower())):
            counts[w] = counts.get(w, 0) + 1
    return counts

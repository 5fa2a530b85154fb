"""Held-out phrasings: how the eval asks about the pipeline's notes, in words training never uses.

The grounded dialogues the model trains on ask with bytechat.notes.dialogues.asking.TEMPLATES.
The eval asks the same kinds of question (what a block can be asked: asking.slots)
with this module's own family: other wording, word order, question words and
politeness, and a seeded share of lower-case run-ons and one-letter typos, as people
type. Nothing under bytechat/notes/ or stages/ imports this module, and a test checks
that no fixed piece of these templates occurs in any training text.

Near misses (the page exists, the fact does not) ask a page for a key it lacks; the
uncovered topics are ones no training dialogue names.
"""

from __future__ import annotations

import random
import re

HELDOUT_TEMPLATES = {
    "attribute": (
        "any idea what {title}'s {key} is?",
        "what was the {key} of {title} again",
        "could you check the {key} for {title}?",
        "I forgot {title}'s {key}. Do you know it?",
        "tell me {title}'s {key}, please",
    ),
    "when": (
        "any idea when {title}'s {key} is?",
        "on what date is the {key} of {title}",
        "when's {title}'s {key} again?",
    ),
    "count": (
        "how many {key} have I got?",
        "what's the count of {key} for {title}",
    ),
    "todo": (
        "anything I still have to do for {title}?",
        "which tasks are open on {title}",
        "what do I need to get done for {title}?",
    ),
    "keyword": (
        "I noted something about {word} once, what was it?",
        "where did {word} come up in my notes",
        "was there a note mentioning {word}?",
        "{word} -- what did I jot down?",
    ),
    "page": (
        "can you sum up {title} for me?",
        "give me the gist of my {title} page",
        "what's the story with {title}?",
        "an overview of {title} please",
    ),
}
# A follow-up after an attribute's answer asks another attribute of the same page, with
# a pronoun ({pron}: his/her/their/its), in words the training conversations never use
# (bytechat.notes.dialogues.conversation.FOLLOW_UPS).
FOLLOWUP_TEMPLATES = (
    "how about {pron} {key}?",
    "is {pron} {key} in there too?",
    "{pron} {key}, is that written down as well?",
    "ok. and {pron} {key}",
)
# Keys a page of notes rarely has; a near miss asks a page for one it lacks.
ABSENT_KEYS = ("shoe size", "blood type", "middle name", "licence plate", "favourite colour", "locker code")
NEAR_MISS_TEMPLATES = (
    "any idea what {title}'s {key} is?",
    "what was the {key} of {title} again",
)
UNCOVERED_TOPICS = (
    "the boiler service",
    "my pension number",
    "the piano tuner",
    "my cousin's wedding",
    "the spare key",
    "the school run rota",
    "my eye test",
    "the broadband contract",
    "the window cleaner",
    "my allergy medicine",
)
# The answer probe's own (it picks best.pt, so it must never ask what the eval asks).
PROBE_TOPICS = (
    "the gutter repair",
    "my old phone contract",
    "the bike lock code",
    "the neighbours' cat",
    "my bank branch",
)
UNCOVERED_TEMPLATES = (
    "have I got anything on {topic}?",
    "what did I decide about {topic}",
    "any idea about {topic}?",
)
LOWER_SHARE = 0.2  # questions typed in lower case, without the question mark
TYPO_SHARE = 0.15  # questions with two adjacent letters of one longer word swapped
_LONG_WORD = re.compile(r"[a-z]{6,}")


def typed(text: str, rng: random.Random) -> str:
    """text as a person might type it: sometimes lower case with no '?', sometimes a typo."""
    if rng.random() < LOWER_SHARE:
        text = text.lower().rstrip("?").rstrip()
    if rng.random() < TYPO_SHARE:
        words = list(_LONG_WORD.finditer(text))
        if words:
            m = rng.choice(words)
            i = rng.randrange(m.start() + 1, m.end() - 2)  # never the first letter
            text = text[:i] + text[i + 1] + text[i] + text[i + 2 :]
    return text


def near_miss(title: str, page_text: str, rng: random.Random) -> str | None:
    """A question about a key the page does not hold, or None if it holds them all."""
    keys = [k for k in ABSENT_KEYS if k not in page_text.lower()]
    if not keys:
        return None
    return rng.choice(NEAR_MISS_TEMPLATES).format(title=title, key=rng.choice(keys))


def uncovered(rng: random.Random, topics: tuple[str, ...] = UNCOVERED_TOPICS) -> str:
    return rng.choice(UNCOVERED_TEMPLATES).format(topic=rng.choice(topics))

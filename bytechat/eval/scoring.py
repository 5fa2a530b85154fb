"""How a reply is scored against what a person wanted to know.

A reply is compared with the gold *answer span* (the value: "14 February", "plot 14"),
never with the whole block it came from, so a reply that pastes a block gets the
precision it deserves. answer_f1 is SQuAD's token F1: both sides lower-cased, the source
prefix ("From [Page] ") and punctuation and the articles a/an/the dropped, then the
harmonic mean of token precision and recall, the best over the gold alternatives.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from typing import Callable, Iterable, Sequence

from wordfreq import zipf_frequency

# What the model and the search box say when the notes hold nothing on a question; a
# reply that holds one of these abstained (the training answer is "I couldn't find
# that in your notes.", the rest are what a person would read the same way, and cover
# every refusal the bot is taught: tests/test_grounded_eval.py).
ABSTAIN_MARKERS = (
    "couldn't find",
    "could not find",
    "not in your notes",
    "don't mention",
    "doesn't mention",
    "no notes",
    "nothing about",
    "not find",
    "notes don't say",
    "don't cover it",
)
_SOURCE = re.compile(r"^\s*from\s+\[[^\]\n]*\]\s*", re.IGNORECASE)
_ARTICLES = frozenset(("a", "an", "the"))


def abstained(reply: str) -> bool:
    low = reply.lower().replace("\u2019", "'")
    return any(marker in low for marker in ABSTAIN_MARKERS)


def tokens(text: str) -> list[str]:
    """The words of text as the scorer compares them (see the module docstring)."""
    text = _SOURCE.sub("", unicodedata.normalize("NFC", text)).lower().replace("\u2019", "'")
    text = "".join(" " if unicodedata.category(ch).startswith(("P", "S")) else ch for ch in text)
    return [w for w in text.split() if w not in _ARTICLES]


def token_f1(reply: str, gold: str) -> float:
    got, want = tokens(reply), tokens(gold)
    if not got or not want:
        return float(got == want)
    common = sum((Counter(got) & Counter(want)).values())
    if not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def answer_f1(reply: str, answers: Sequence[str]) -> float:
    """The best token F1 of reply over the gold alternatives (0 with none)."""
    return max((token_f1(reply, a) for a in answers), default=0.0)


def _joined(text: str) -> str:
    return " " + " ".join(tokens(text)) + " "


def contains(reply: str, answers: Iterable[str]) -> bool:
    """Whether reply holds a gold span, word for word after normalising."""
    hay = _joined(reply)
    return any(_joined(a).strip() and _joined(a) in hay for a in answers)


def coverage(reply: str, facts: Sequence[str]) -> float:
    """The share of facts (one per block of a page) that reply mentions."""
    return sum(contains(reply, [f]) for f in facts) / len(facts) if facts else 0.0


def distinct_2(replies: Sequence[str]) -> float:
    """Distinct word bigrams over all bigrams of replies (1.0: no bigram repeats)."""
    grams = [g for r in replies for g in zip(tokens(r), tokens(r)[1:])]
    return len(set(grams)) / len(grams) if grams else 0.0


def is_english(word: str) -> bool:
    """Whether wordfreq's English word list holds word ("hello", "todo": yes; "modifut",
    a salad's made-up word, and "bytechat": no)."""
    return zipf_frequency(word, "en") > 0


def real_word_rate(replies: Sequence[str], known: Callable[[str], bool] = is_english) -> float:
    """The share of the replies' words (digits aside) that are real words (known)."""
    words = [w for r in replies for w in tokens(r) if not w.isdigit()]
    return sum(map(known, words)) / len(words) if words else 0.0


def mean(values) -> float:
    """The mean of a share's values (booleans count 1 and 0); 0.0 for none."""
    values = list(values)
    return sum(values) / len(values) if values else 0.0

"""Small talk or a question about the notes? A classifier of the newest message, fitted on
what training teaches: chat sends small talk no notes, as the model is taught it.

retrieval.is_small_talk knows the small talk the model is taught, typed its own way
(fuzzy match). People type small talk no template holds ("thanks a lot", "later, gotta
run"), and each has a word some note shares: searched, it is shown that note, and the
model quotes it. This module tells the two apart by how a message reads: character n-grams
(TF-IDF) and a logistic regression (scikit-learn), fitted on

    small talk   every prompt of dialogues.everyday's topics that look nothing up
    questions    the user turns the grounded dialogues write about synthetic pages
                 (single questions, conversations, follow-ups, uncovered topics), and
                 everyday's refusals, whose question the notes may answer

so it needs no one's notes and is the same for every user. A message is small talk when
the classifier gives it SMALL_TALK_PROBABILITY or more and every topic word of it is one
English uses often (query.COMMON_WORD): a name or a typo ("piranesi", "lentls") is what
a question about the notes holds. The threshold and the features were chosen on the small-
talk probe's dev half and every dev question about notes (docs/notes.md, "How retrieval
works", rule 8). Fitting takes a second or two (warm); it happens once per process.
"""

from __future__ import annotations

import functools
import random
import re

from wordfreq import zipf_frequency

from bytechat.notes.answer_kinds import QUESTION_WORDS
from bytechat.notes.dialogues import everyday
from bytechat.notes.query import COMMON_WORD, clauses, query_terms

SMALL_TALK_PROBABILITY = 0.9
# The questions it learns from: dialogues about PAGES synthetic pages, drawn with SEED
# (fixed: the classifier is part of the code, not of a run).
PAGES, DIALOGUES, SEED = 200, 3000, 0
C = 3.0  # inverse regularisation of the logistic regression


def _key(text: str) -> str:
    """A message as the sets compare it: lower case, no closing punctuation."""
    return text.lower().rstrip("?!. ")


def training_texts() -> tuple[list[str], list[str]]:
    """(small talk, questions): the texts the classifier is fitted on (module docstring)."""
    # the conversation writer imports retrieval, which imports this module
    from bytechat.notes import grounded, synthetic
    from bytechat.notes.blocks import all_blocks
    from bytechat.notes.dialogues import conversation

    small_talk = sorted({p.lower() for p in everyday.chat_prompts()})
    rng = random.Random(SEED)
    blocks = all_blocks(synthetic.synthetic_pages(rng, PAGES))

    def nothing(question: str, k: int) -> list:  # only the questions are kept, not the notes
        return []

    found = grounded.dialogues(blocks, nothing, rng, DIALOGUES, unknown_name=synthetic.name)
    asked = {m["content"] for d in found for m in d.messages if m["role"] == "user"}
    talks = conversation.Conversations(blocks, nothing, unknown_name=synthetic.name)
    for _ in range(DIALOGUES // 4):  # a conversation's turns: a question, then its follow-up
        first = talks.fact(rng)
        then = first and talks.follow(rng, first.block.page, first.block)
        asked |= {turn.user for turn in (first, then) if turn}
    taught = {_key(p) for p in everyday.chat_prompts()}
    asked = {text.lower() for text in asked}
    refusals = {p.lower() for p in everyday.all_prompts()} - set(small_talk)
    questions = sorted({q for q in asked | refusals if _key(q) not in taught})
    return small_talk, questions


def _fitted(texts: list[str], labels: list):
    # scikit-learn only when a message is first judged (it takes a moment to import)
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    model = make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
        LogisticRegression(C=C, class_weight="balanced", max_iter=3000),
    )
    return model.fit(texts, labels)


@functools.lru_cache(maxsize=1)
def _classifier():
    small_talk, questions = training_texts()
    return _fitted(small_talk + questions, [1] * len(small_talk) + [0] * len(questions))


@functools.lru_cache(maxsize=1)
def _act_classifier():
    topics = everyday.chat_topics()
    pairs = sorted({(p.lower(), name) for name, prompts in topics.items() for p in prompts})
    return _fitted([p for p, _ in pairs], [name for _, name in pairs])


@functools.lru_cache(maxsize=1024)  # a turn asks of the same message several times (notes, topic, act)
def small_talk_probability(text: str) -> float:
    """The classifier's probability that text is small talk (0 to 1)."""
    return float(_classifier().predict_proba([text.lower()])[0, 1])


def reads_as_small_talk(text: str) -> bool:
    """Whether text reads as small talk: each of its clauses that has topic words does
    (the classifier is sure, and no topic word is rare in English: a name or a typo makes
    it a question about the notes), and one clause does. "good morning, what do I do in
    the afternoon?" asks something."""
    judged = [clause for clause in clauses(text) if query_terms(clause)]
    return bool(judged) and all(_sure(clause) for clause in judged)


def _sure(text: str) -> bool:
    """No topic word of text is rare in English, and the classifier is sure it is small talk."""
    if any(zipf_frequency(term, "en") < COMMON_WORD for term in query_terms(text)):
        return False
    return small_talk_probability(text) >= SMALL_TALK_PROBABILITY


# The words an English question opens with ("is my blood group written down anywhere").
_ASKING = QUESTION_WORDS | frozenset(
    "whats what's whos who's whens when's wheres where's hows how's "
    "is are am was were do does did have has had can could will would should shall may".split()
)


# How people open a question typed without its "?" ("any idea what Ruth's number is").
_ASKING_LEADS = re.compile(r"^(?:any ?idea|anything|any notes?|remind me|i wonder|no idea|not sure)\b", re.IGNORECASE)


def reads_as_question(text: str) -> bool:
    """Whether text asks something by its shape: it ends with "?", or opens with a
    question word, an auxiliary verb or a way of asking ("any idea", "remind me").
    "later, gotta run" and "hmm ok" do not."""
    said = text.strip()
    first = said.split(maxsplit=1)[0].lower().strip(",.!;:\"'") if said else ""
    return said.endswith("?") or first.replace("\u2019", "'") in _ASKING or bool(_ASKING_LEADS.match(said))


def small_talk_act(text: str) -> str | None:
    """The kind of small talk text is (a topic of dialogues.everyday: "thanks",
    "goodbye", "feeling_low", ...), or None when it does not read as small talk: the
    whole message gets SMALL_TALK_PROBABILITY or more and has no rare word ("hi" and
    "thanks!" have no topic words, and are judged all the same). A message chat sent no
    notes is not always small talk: with the notes off, every question has none. The
    act's classifier is fitted on the taught prompts, by topic, with the same features."""
    return str(_act_classifier().predict([text.lower()])[0]) if _sure(text) else None


def warm() -> None:
    """Fit both classifiers now: chat and serve call it at start, so that the first
    message does not wait for them (a second or two)."""
    _classifier()
    _act_classifier()

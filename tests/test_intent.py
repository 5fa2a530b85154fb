"""Small talk or a question about the notes (bytechat.notes.intent), and chat's notes rule
that uses it (retrieval.wants_notes)."""

from __future__ import annotations

import json
from pathlib import Path

from bytechat.eval.small_talk import EVERYDAY_PROMPTS, probe
from bytechat.notes import intent
from bytechat.notes.dialogues import everyday
from bytechat.notes.retrieval import conversation_topic, retrieve_for_chat, wants_notes
from tests.test_notes_index import indexed

REPO = Path(__file__).resolve().parent.parent


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def test_small_talk_no_template_holds_gets_no_notes_even_where_a_note_says_its_words(tmp_path):
    pages = {"Routine.md": "- Many thanks to Ines for the help with the move.\n- Feeling down? A walk helps.\n"}
    with indexed(tmp_path, pages) as idx:
        for said in ("many thanks, that helps", "I feel a bit down"):
            assert said.lower() not in everyday.all_prompts(), "typed its own way, not a taught prompt"
            assert idx.search(said), f"the notes hold {said!r}'s words: only the classifier keeps them out"
            assert intent.reads_as_small_talk(said) and retrieve_for_chat(idx, user(said)) == [], said
        # (a question made only of words small talk uses can read as small talk: "what helps
        # when I'm down?" does, at 0.91; docs/notes.md)
        assert retrieve_for_chat(idx, user("who helped with the move?"))[0].page == "Routine"


def test_a_name_or_a_typo_makes_a_question_whatever_the_classifier_says(monkeypatch):
    monkeypatch.setattr(intent, "SMALL_TALK_PROBABILITY", 0.0)  # every message "reads as" small talk
    assert intent.reads_as_small_talk("thanks, that helps")
    assert not intent.reads_as_small_talk("thanks, and Jonas's phone?"), "a name English rarely uses"
    assert not intent.reads_as_small_talk("thanks, what's the sourdouhg ratio?"), "a typo"


def test_a_follow_up_keeps_its_topic_even_if_it_reads_as_small_talk(monkeypatch):
    monkeypatch.setattr(intent, "SMALL_TALK_PROBABILITY", 0.0)
    follow = [
        {"role": "user", "content": "who is Priya?"},
        {"role": "assistant", "content": "From [Priya] my manager since March 2025"},
        {"role": "user", "content": "and where does she work?"},
    ]
    assert wants_notes(follow), "a follow-up is searched with the conversation's topic"
    assert not wants_notes(follow[-1:]), "alone, the same message reads as small talk"


def test_no_dev_question_about_notes_reads_as_small_talk():
    for folder in (REPO / "data" / "unseen-notes", REPO / "data" / "new-user-notes"):
        rows = [json.loads(line) for line in (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
        asked = [r["question"] for r in rows if r["split"] == "dev"]
        assert asked and not [q for q in asked if intent.reads_as_small_talk(q)], folder.name


def test_it_learns_only_from_what_training_writes_and_the_same_each_time():
    small_talk, questions = intent.training_texts()
    assert (small_talk, questions) == intent.training_texts(), "deterministic"
    assert small_talk and questions and not set(small_talk) & set(questions)
    asked_by_eval = [line for lines in probe(untaught=True).values() for line in lines]  # what no model trains on
    measured = {intent._key(t) for t in (*EVERYDAY_PROMPTS, *asked_by_eval)}
    assert not measured & {intent._key(t) for t in (*small_talk, *questions)}, "never fitted on what measures it"
    refusals = [p for p in everyday.all_prompts() if "weather" in p or "capital" in p]
    assert refusals and all(p.lower() in questions for p in refusals), "a refusal's question is searched"


def test_small_talk_typed_its_own_way_is_read_as_its_act():
    for said, act in (
        ("many thanks, that helps", "thanks"),
        ("I feel a bit down", "feeling_low"),
        ("ok cool, catch you soon", "goodbye"),
    ):
        assert said.lower() not in everyday.all_prompts()
        assert intent.small_talk_act(said) == act, said
    assert intent.small_talk_act("hi") == "greeting", "no topic words, and an act all the same"
    assert intent.small_talk_act("when is Jonas's birthday?") is None, "with the notes off, a question has none"
    assert intent.small_talk_act("what did I write about the garden?") is None, "a question is no act"


def test_small_talk_is_no_topic_to_follow_up(monkeypatch):
    joke = [
        {"role": "user", "content": "tell me a joke"},
        {"role": "assistant", "content": everyday.JOKES[0]},
        {"role": "user", "content": "and another thing about it?"},
    ]
    assert conversation_topic(joke) == [], "the joke was small talk: nothing to follow up"
    asked = [{"role": "user", "content": "who is Priya?"}, *joke[1:]]
    assert conversation_topic(asked)[0] == "who is Priya?", "a question is a topic"


def test_a_question_is_read_by_its_shape():
    """A question mark, or an opening question word or auxiliary verb, whatever the
    words; what only says something ("later, gotta run", "tell me about Gus") asks nothing.
    (Chat answers a question retrieval found nothing for with the abstention or a refusal:
    bytechat/serve/copying.py, NONE_FOUND_ABSTAINS.)"""
    for asked in (
        "and nuts?",
        "is my blood group written down anywhere",
        "Who\u2019s my GP",
        "  HOW long. ",
        "any idea what Ruth's shoe size is",  # typed without its "?"
        "remind me when the boiler gets serviced",
        "anything on the spare key",
    ):
        assert intent.reads_as_question(asked), asked
    for said in (
        "later, gotta run",
        "hmm ok",
        "awesome, thanks",
        "tell me about Gus",
        "",
        "whatever you say",
        "anyway",
    ):
        assert not intent.reads_as_question(said), said

"""Facts said in passing (bytechat.notes.dialogues.line_facts): the training questions
that teach the span head to point into a note's own sentences."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from bytechat.notes import grounded
from bytechat.notes.blocks import NoteBlock, all_blocks
from bytechat.notes.dialogues.line_facts import line_facts, line_slot
from bytechat.notes.roam import RoamPage
from bytechat.notes.synthetic import synthetic_pages


def kinds(line: str) -> list[tuple[str, str]]:
    return [(kind, span) for kind, span, _ in line_facts(line)]


def test_each_kind_is_found_with_the_words_around_it():
    assert line_facts("crates arrive on 11 January, 3 per person") == [
        ("date", "11 January", "crates arrive"),
        ("count", "3", "per person"),
    ]
    assert kinds("Met Nal at 13:45, talked about the roof.") == [("time", "13:45")]
    assert kinds("First ferment 8 to 10 days") == [("duration", "8 to 10 days")]
    assert kinds("budget: €950 in total") == [("amount", "€950")]
    assert kinds("every other week on nights") == [("frequency", "every other week")]
    assert kinds("Still has my drill from October") == [("date", "October")]
    assert kinds("Bake at 200 °C for 30 minutes") == [("temperature", "200 °C"), ("duration", "30 minutes")]


def test_a_time_range_is_one_time_not_two_counts():
    """An earlier kind takes its text first: "20:00 to 22:00" is not the count 20."""
    assert kinds("rehearsals 20:00 to 22:00 in the back hall") == [("time", "20:00 to 22:00")]


def test_the_question_never_says_the_fact():
    for kind, span, topic in line_facts("Harvest: 14 jars of honey, bottled on 3 August 2026"):
        assert span.lower() not in topic and not set(span.lower().split()) & set(topic.split()), (kind, topic)


def test_a_one_line_attribute_is_left_to_its_attribute_question():
    rng = random.Random(0)
    assert line_slot(NoteBlock("Jonas", "birthday: 14 February", 0), rng) is None
    assert line_slot(NoteBlock("Jonas", "likes trains and tea", 1), rng) is None
    slot = line_slot(NoteBlock("Jonas", "TODO call Jonas before 3 March", 2), rng)
    assert slot.answer == "3 March" and "todo" not in slot.fields["question"].lower()


@settings(max_examples=25, deadline=None)
@given(st.integers(0, 10_000))
def test_every_fact_is_text_of_its_block(seed):
    """The head is taught to point at the notes: the fact is always a substring of the block."""
    rng = random.Random(seed)
    for block in all_blocks(synthetic_pages(rng, 3)):
        slot = line_slot(block, rng)
        if slot is not None:
            assert slot.answer in block.text and slot.fields["question"]


def test_a_dialogue_about_a_fact_in_passing_points_the_head_at_it(monkeypatch):
    """With the shipped quote answers the reply quotes the block and the span labels the fact."""
    monkeypatch.setattr(grounded, "ANSWERS", "quote")
    pages = [RoamPage("Office Move", "- Crates\n    - crates arrive on 11 January, 3 per person\n")]
    found = [
        d for seed in range(20) for d in grounded.dialogues(all_blocks(pages), lambda q, k: [], random.Random(seed), 4)
    ]
    line = [d for d in found if d.kind == "line"]
    assert line, [d.kind for d in found]
    for d in line:
        reply, first, last = d.answer_span()
        doc = grounded.format_chat(d.messages).encode("utf-8")
        assert doc[first : last + 1].decode() == d.fact in ("11 January", "3")
        assert d.messages[-1]["content"].startswith("From [Office Move]") and first < reply

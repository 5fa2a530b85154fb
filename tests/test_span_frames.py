"""Faithful decoding for span answers (bytechat.serve.span_frames): every reply the span
dialogues teach is allowed byte by byte, and what no template with copies of the notes
could write (a misspelt page name, two lines spliced, a frame's words changed) is not."""

from __future__ import annotations

import random

import pytest

from bytechat.notes import grounded
from bytechat.notes.blocks import NoteBlock, all_blocks, notes_system_content, render_notes
from bytechat.notes.index import NotesIndex
from bytechat.notes.roam import RoamPage
from bytechat.notes.synthetic import synthetic_pages
from bytechat.serve import copying, prompt_notes
from bytechat.serve.span_frames import SpanFrames, skeletons, sources_of, spelled
from bytechat.text.chat_format import escape_content, format_chat

PAGES = [
    RoamPage("Bees", "- hives:: 3\n- location:: behind the shed\n- {{[[TODO]]}} order new frames\n"),
    RoamPage("Marta", "- birthday:: 9 April\n- Lives in Porto with Rui.\n- Gift ideas\n    - ceramics class\n"),
    RoamPage("Car", "- plate:: KL 482 TR\n- next service:: 12 January 2027\n"),
    RoamPage("Priya", "- relation:: my manager since March 2025\n- {{[[TODO]]}} send Priya the Q1 numbers\n"),
]
JONAS = NoteBlock("Jonas", "birthday: 14 February. Yes, really.", 0)
STARTER = NoteBlock("Sourdough Starter", "Feeding\n  Ratio 1:1:1 by weight\n  the night before", 1)


def machine(blocks) -> SpanFrames:
    return SpanFrames(*sources_of([f"[{b.page}] {b.text}" for b in blocks]))


def allowed(m, reply: str) -> bytes | None:
    got = m.allowed(reply.encode())
    return None if got is None else bytes(got)


def refused_at(m, reply: bytes) -> int | None:
    """Where decoding under m could not have written reply (then its end: a stop tag's
    newline must be allowed), or None when it could."""
    for i in range(len(reply) + 1):
        got = m.allowed(reply[:i])
        want = reply[i] if i < len(reply) else 0x0A
        if got is None or want not in got:
            return i
    return None


def dialogues(pages, n, seed):
    blocks = all_blocks(pages)
    with NotesIndex.build(blocks) as index:
        return grounded.dialogues(blocks, lambda q, k: [h.block for h in index.search(q, k)], random.Random(seed), n)


@pytest.mark.parametrize("pages", ["example", "synthetic"])
def test_every_reply_the_span_dialogues_teach_is_allowed(monkeypatch, pages):
    """The machine never forbids what training wrote: each assistant turn of the span
    dialogues, decoded with the prompt it was taught with, is allowed byte by byte and may
    end where it ends (a quote, an own sentence or a frame with copies of the notes)."""
    monkeypatch.setattr(grounded, "ANSWERS", "span")
    source = PAGES if pages == "example" else synthetic_pages(random.Random(5), 40)
    checked = 0
    for d in dialogues(source, 150, seed=1):
        prompt = format_chat(d.messages[:-1]).encode()
        m = copying.copy_guard(prompt, True, "span")
        reply = escape_content(d.messages[-1]["content"]).encode()
        if m is None or not prompt_notes.shown_entries(d.messages[:-1]):
            continue
        at = refused_at(m, reply)
        assert at is None, (d.kind, reply[:at], reply[at:])
        checked += 1
    assert checked >= 60


def test_a_copy_is_whole_words_of_one_line_and_a_frame_is_a_templates():
    m = machine([JONAS, STARTER])
    assert allowed(m, "It's 14 Febru") == b"a"  # inside a copy only the notes go on
    assert allowed(m, "It's 14 February, according to your Jon") == b"a"  # the page's name, exact
    assert allowed(m, "It's 14 February, according to your Dough") is None  # and whole
    assert allowed(m, "It's 14 February. That's the ") == b"Bb"  # a key: "birthday", the only one shown
    assert allowed(m, "It's 14 February. That's the birthday") == b" "  # whole: where its ": " was
    keyless = machine([STARTER])  # no key shown: no frame that says one
    assert allowed(keyless, "It's the night before") == b","  # not ". That's the {key} on ..."
    assert allowed(m, "It's 14 February, according to your Jonas notes.") == b"\n"  # the frame ends
    assert allowed(m, "It's 14 February, accord to") is None  # a frame's words, changed: none
    assert allowed(m, "It's 14 February by weight") is None  # two lines spliced: none
    assert allowed(m, "It's 14 Feb.") is None  # a copy ends where a word ends
    assert allowed(m, "It's 14 February. Yes, really.") == b" "  # the line's own full stop, not ".,"
    assert allowed(m, "It's r") == allowed(m, "It's R") == b"ae"  # "Ratio", "really": the first letter either case
    assert allowed(m, "It's 14 February, according to your Jonas notes.\nus") == b"e"  # a stop tag


def test_the_frames_are_the_templates_spelled_out():
    frames_ = skeletons()
    assert "It's \x01, according to your \x02 notes.".encode() in frames_  # a copy, a page's name
    assert "Yes. \x01 is the \x04 of \x02.".encode() in frames_  # a key
    assert spelled("{Pre}{span}, according to {notes}.") == [
        head + "\x01, according to " + notes + "."
        for head in ("", "On ", "In ")
        for notes in ("your \x02 notes", "your notes on \x02")
    ]


def test_copy_guard_uses_the_frames_only_for_a_span_model_with_notes_shown(monkeypatch):
    prompt = format_chat(
        [
            {"role": "system", "content": notes_system_content(render_notes([JONAS]))},
            {"role": "user", "content": "when is Jonas's birthday?"},
        ]
    ).encode()
    span = copying.copy_guard(prompt, True, "span")
    said = b"It's 14 February, according to your Jonas notes."
    assert refused_at(span, said) is None
    assert refused_at(copying.copy_guard(prompt, True, "quote"), said) is not None  # a quote model: no frames
    assert refused_at(span, b"From [Jonas] birthday: 14 February. Yes, really.") is None  # quotes still
    assert refused_at(span, b"I couldn't find that in your notes.") is None  # and its own sentences
    monkeypatch.setattr(copying, "SPAN_FRAMES", False)
    assert copying.copy_guard(prompt, True, "span").allowed(b"It's 14 Feb bla") is None  # free, as before


def test_a_span_models_misspelt_frame_is_kept_to_the_notes():
    """Through generate_bytes: a model that wants to misspell the page in its frame writes
    what the frames and the notes allow; unconstrained, it misspells (the test can fail)."""
    from tests.test_copying import FAITHFUL, GREEDY, chat, random_model, reply_of, steer

    model = random_model(7)
    wanted = b"It's 14 February, according to your Jonsa notes."
    handle = steer(model, wanted)
    try:
        free = reply_of(model, chat([JONAS, STARTER]), GREEDY, answer_style="span")
        kept = reply_of(model, chat([JONAS, STARTER]), FAITHFUL, answer_style="span")
    finally:
        handle.remove()
    assert free.startswith(wanted)
    prompt = format_chat(chat([JONAS, STARTER])).encode()
    reply = kept[: kept.index(b"\n")] if b"\n" in kept else kept
    assert refused_at(copying.copy_guard(prompt, True, "span"), reply) is None, kept
    assert kept.startswith(b"It's 14 February, according to your J") and b"Jonsa" not in kept, kept

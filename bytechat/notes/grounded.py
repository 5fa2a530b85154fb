"""Grounded dialogues: questions about note blocks, answered from the notes in the prompt.

Each dialogue is what chat does at inference time, written out for training:

    system: Notes:                      <- retrieval's hits for the question, best last
    [Other page] a distractor block
    [Jonas] Birthday: 14 February. Yes, really.
    user: When is Jonas's birthday?
    assistant: Jonas's birthday is on 14 February.

The answer says the span that answers (bytechat.notes.dialogues.spans: a value's first
clause, the open TODOs, the sentence that holds a word) in a short sentence that names
the page (dialogues.frames, by question type: when, how many, who, where, what, yes/no);
the span is copied from the block placed last, so the copy head keeps it faithful, and
no template puts a value into an answer that the notes do not hold (tests). A question
about a page as a whole gets a summary of the page's blocks shown (dialogues.summary);
a question the notes do not cover gets "Notes: none found." (or only unrelated blocks)
and the answer ABSTAIN. Before issue 29 every answer was `From [Page] <block>`, verbatim:
`answer()` still says that, as the eval's search box.

Questions come from many templates filled from a block's attributes (`key: value`),
TODOs, page titles and its rarer words (bytechat.notes.dialogues.asking: its slots and
templates; the eval asks the same slots in its own words, bytechat.eval.phrasings).
`gold` is the first span the answer copies.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from bytechat.text.chat_format import escape_content, format_chat, render_transcript
from bytechat.notes.roam import RoamPage
from bytechat.notes.blocks import ANSWER_PREFIX, NoteBlock, lead_blocks, notes_system_content, render_notes
from bytechat.notes.dialogues import frames, spans, summary
from bytechat.notes.dialogues.asking import (
    KEYWORD_TEMPLATES,
    PAGE_TEMPLATES,
    TEMPLATES,
    TODO_TEMPLATES,
    UNCOVERED_TEMPLATES,
    UNCOVERED_TOPICS,
    Slot,
    slots,
    title,
    word_counts,
)
from bytechat.notes.dialogues.frames import Said
from bytechat.notes.dialogues.line_facts import line_slot
from bytechat.notes.retrieval import fitting, notes_budget

ABSTAIN = "I couldn't find that in your notes."
Retriever = Callable[[str, int], Sequence[NoteBlock]]


@dataclass(frozen=True)
class Dialogue:
    messages: list[dict[str, str]]
    gold: str  # the first span the answer copies ("" for an uncovered question)
    kind: str
    page: str  # the page the answer comes from ("" when uncovered)
    spans: tuple[str, ...] = ()  # every piece the answer copies from the notes
    blocks: tuple[NoteBlock, ...] = ()  # the blocks those pieces come from
    fact: str = ""  # the span of blocks[0] that answers a fact question, whatever the reply quotes

    def document(self) -> str:
        return render_transcript(self.messages)

    def answer_span(self) -> tuple[int, int, int] | None:
        """Where the extractive answer head (bytechat/model/span_head.py) should point, in
        document()'s bytes: (the reply's position, the byte before its first; the gold
        span's first and last byte, inside the answering block as the notes show it).
        None where no one span answers (a page question, an abstention, a small-talk
        turn) or the block is not shown whole."""
        if not self.fact or not self.blocks or self.kind in ("page", "conv_page"):
            return None
        doc = self.document().encode("utf-8")
        reply = doc.rfind(b"\nassistant: ")
        shown = escape_content(self.blocks[0].render()).encode("utf-8")
        block = doc.find(shown, 0, max(0, reply))
        fact = escape_content(self.fact).encode("utf-8")
        first = doc.find(fact, block, block + len(shown)) if block >= 0 else -1
        if reply < 0 or first < 0:
            return None
        return reply + len(b"\nassistant:"), first, first + len(fact) - 1


# How the training dialogues answer (params.yaml grounded.answers; the stage sets it):
# "span" says the fact in a short sentence naming the page (dialogues.frames) and sums up
# a page (dialogues.summary); "quote" answers with the block quoted whole, page and all
# (answer(): what training taught before issue 29), so the two can be compared in one
# pipeline (`make sweep SET="grounded.answers=span,quote"`).
# "clause" quotes an attribute block only up to the end of its value's first clause
# (`From [Jonas] Birthday: 14 February`, not the joke after it): the quote's copy, its
# end where the fact ends; other questions as "quote".
# "value" names the page and says an attribute's value as the block writes it, without
# its key (`From [Jonas] 14 February. Yes, really.`): the quote's copy, started where the
# fact starts; other questions as "quote".
ANSWER_STYLES = ("span", "quote", "clause", "value")
ANSWERS = "span"  # the stage sets it from params.yaml (the shipped value: quote, docs/notes.md)


def quoted(block: NoteBlock) -> Said:
    return Said(answer(block), (block.text,))


def clause_quoted(block: NoteBlock, value: str) -> Said:
    """The block quoted from its start to the end of value's answering span (the whole
    block when that is all of it, or the span is not found in it)."""
    span = spans.value_span(value)
    at = block.text.find(span) if span else -1
    end = at + len(span)
    if at < 0 or end >= len(block.text.rstrip(".!? ")):
        return quoted(block)
    cut = block.text[:end]
    return Said(f"{ANSWER_PREFIX}[{block.page}] {cut}", (cut,))


def value_quoted(block: NoteBlock, value: str) -> Said:
    """The page, then the block from where value starts (the whole block quoted when value
    is not in it)."""
    at = block.text.find(value) if value else -1
    if at <= 0:
        return quoted(block)
    said = block.text[at:]
    return Said(f"{ANSWER_PREFIX}[{block.page}] {said}", (said,))


def page_reply(name: str, picked: Sequence[NoteBlock], block: NoteBlock, rng: random.Random, room: int | None) -> Said:
    """The reply to "tell me about X": a summary of the picked blocks, or (quote) each
    of them quoted."""
    if ANSWERS in ("quote", "clause", "value"):
        return summary.quotes(picked or [block], room)
    return summary.summary_reply(name, picked, rng, room)


def abstains(reply: str) -> bool:
    """Whether reply is the bot's "not in your notes": chat then names no sources (the
    blocks it was shown did not answer), in the terminal, the API and the page."""
    return reply.strip() == ABSTAIN


def answer(block: NoteBlock) -> str:
    """The search box's reply: the block quoted whole (what training answered before
    issue 29; the eval's baseline pastes retrieval's top hit this way)."""
    return ANSWER_PREFIX + block.render()


def fit_notes(blocks: Sequence[NoteBlock], question: str, context_bytes: int, k: int) -> list[NoteBlock]:
    """The first blocks (best first, at most k) whose notes fit the budget chat gives them
    (retrieval.notes_budget for a model of context_bytes), as retrieve_for_chat keeps them."""
    blocks = list(blocks)
    budget = notes_budget(context_bytes, [{"role": "user", "content": question}])
    return [blocks[i] for i in fitting(blocks, k, budget)]


def shown_as_chat(found: Sequence[NoteBlock], question: str, context_bytes: int, k: int) -> list[NoteBlock]:
    """What chat shows of retrieval's hits for question: all it returned (k, or a
    whole-page question's more: search.PAGE_BLOCKS) that fit the budget."""
    return fit_notes(found, question, context_bytes, max(k, len(found)))


@dataclass(frozen=True)
class Asked:
    """A training question about a block, and how to answer it in a given room (bytes)."""

    text: str
    kind: str  # the slot's family: attribute | todo | keyword
    reply: Callable[[int | None], Said]
    fact: str = ""  # the span that answers it (the span-style reply's first), whatever reply says


def ask(slot: Slot, block: NoteBlock, rng: random.Random, yes_no: bool = True) -> Asked | None:
    """A training question for slot (TEMPLATES and the finer types of dialogues.frames)
    and its reply: the span in a sentence naming the page. Page questions are answered
    by page_dialogue (a summary of the notes shown)."""
    name = title(block.page)
    asked = _ask(slot, block, rng, yes_no, name)
    if asked is None or ANSWERS == "span":
        return asked  # its reply's first span is the fact (grounded_dialogue)
    # The fact the span head points at (model/span_head.py): a fact said in passing names
    # its own; else the span-style reply's, drawn with an rng of its own, so the dialogues
    # quoted are what they were without it.
    fact = asked.fact or _ask(slot, block, random.Random(0), False, name).reply(None).spans[0]
    if ANSWERS == "clause" and asked.kind == "attribute":
        return Asked(asked.text, asked.kind, lambda room: clause_quoted(block, slot.answer), fact)
    if ANSWERS == "value" and asked.kind == "attribute":
        return Asked(asked.text, asked.kind, lambda room: value_quoted(block, slot.answer), fact)
    return Asked(asked.text, asked.kind, lambda room: quoted(block), fact)


def _ask(slot: Slot, block: NoteBlock, rng: random.Random, yes_no: bool, name: str) -> Asked | None:
    if slot.kind in ("attribute", "when", "count"):
        key = slot.fields["key"]
        text, qtype, yes = frames.ask_attribute(slot.kind, key, name, slot.answer, rng, TEMPLATES[slot.kind], yes_no)
        return Asked(text, "attribute", lambda room: frames.attribute_reply(qtype, key, name, slot.answer, rng, yes))
    if slot.kind == "line":  # a fact said in passing: its sentence, the head pointed at the fact
        return Asked(
            slot.fields["question"],
            "line",
            lambda room: frames.gist_reply(name, block.text, slot.answer, rng, room),
            slot.answer,
        )
    if slot.kind == "todo":
        text = rng.choice(TODO_TEMPLATES).format(**slot.fields)
        return Asked(text, "todo", lambda room: frames.todo_reply(name, block.text, rng, room))
    if slot.kind == "keyword":
        text = rng.choice(KEYWORD_TEMPLATES).format(**slot.fields)
        return Asked(text, "keyword", lambda room: frames.gist_reply(name, block.text, slot.word, rng, room))
    return None


def page_question(name: str, rng: random.Random) -> str:
    return rng.choice(PAGE_TEMPLATES + summary.SUMMARY_QUESTIONS).format(title=name)


def room(messages: Sequence[dict[str, str]], context_bytes: int) -> int:
    """Bytes left for the reply when messages are the prompt of a context_bytes model: a
    training row starts at the dialogue and holds context_bytes, so a longer reply would
    be cut there and never learn its end."""
    return context_bytes - len(format_chat(messages).encode("utf-8")) - 2


def grounded_dialogue(
    block: NoteBlock,
    asked: Asked,
    retrieve: Retriever,
    k: int,
    context_bytes: int,
    system: str | None = None,
    place: float | None = None,
) -> Dialogue:
    """The dialogue for one question: retrieval's other hits as distractors, the block last
    (where chat puts retrieval's best), or, given place in [0, 1), at that fraction of the
    shown blocks from the top, so the question, not the place, says which block answers."""
    others = [hit for hit in retrieve(asked.text, k + 1) if hit != block]
    shown = fit_notes([block, *others], asked.text, context_bytes, k)
    if place is not None and block in shown:
        shown.remove(block)
        shown.insert(len(shown) - int(place * (len(shown) + 1)), block)
    notes = render_notes(shown)
    prompt = [
        {"role": "system", "content": notes_system_content(notes, system)},
        {"role": "user", "content": asked.text},
    ]
    said = asked.reply(room(prompt, context_bytes))
    messages = [*prompt, {"role": "assistant", "content": said.text}]
    fact = asked.fact or (said.spans[0] if ANSWERS == "span" else "")
    return Dialogue(messages, said.spans[0], asked.kind, block.page, said.spans, (block,), fact)


def page_dialogue(block: NoteBlock, retrieve: Retriever, rng: random.Random, k: int, context_bytes: int) -> Dialogue:
    """ "Tell me about X": the notes retrieval shows for the question (the page's most
    informative blocks; the lead block first if retrieval missed the page), summarised."""
    name = title(block.page)
    text = page_question(name, rng)
    hits = list(retrieve(text, k))
    if not any(b.page == block.page for b in hits):
        hits = [block, *(h for h in hits if h != block)]
    shown = shown_as_chat(hits, text, context_bytes, k)
    if not any(b.page == block.page for b in shown):
        shown = fit_notes([block, *shown], text, context_bytes, k)
    prompt = [{"role": "system", "content": render_notes(shown)}, {"role": "user", "content": text}]
    picked = summary.chosen(block.page, shown)
    said = page_reply(name, picked, block, rng, room(prompt, context_bytes))
    messages = [*prompt, {"role": "assistant", "content": said.text}]
    return Dialogue(messages, said.spans[0], "page", block.page, said.spans, tuple(picked))


def uncovered_dialogue(
    rng: random.Random, retrieve: Retriever, k: int, context_bytes: int, unknown_name: str
) -> Dialogue:
    """A question the notes do not answer; whatever retrieval finds, the answer abstains."""
    topic = rng.choice((*UNCOVERED_TOPICS, f"{unknown_name}'s birthday", unknown_name))
    return abstaining(rng.choice(UNCOVERED_TEMPLATES).format(topic=topic), retrieve, k, context_bytes)


def abstaining(text: str, retrieve: Retriever, k: int, context_bytes: int, kind: str = "uncovered") -> Dialogue:
    """text asked as chat lays it out (retrieval's hits for it), answered ABSTAIN."""
    notes = render_notes(shown_as_chat(retrieve(text, k), text, context_bytes, k))
    messages = [
        {"role": "system", "content": notes},
        {"role": "user", "content": text},
        {"role": "assistant", "content": ABSTAIN},
    ]
    return Dialogue(messages, "", kind, "")


def dialogues(
    blocks: Sequence[NoteBlock],
    retrieve: Retriever,
    rng: random.Random,
    n: int,
    k: int = 3,
    uncovered: float = 0.1,
    unknown_name: Callable[[random.Random], str] | None = None,
    context_bytes: int = 512,
    anywhere: float = 0.0,
) -> list[Dialogue]:
    """n dialogues about random blocks (a share `uncovered` about what the notes lack; a
    share `anywhere` of the answered ones with the answering block at a random place)."""
    if not blocks:
        return []
    counts = word_counts(blocks)
    leads = lead_blocks(blocks)
    out: list[Dialogue] = []
    while len(out) < n:
        if rng.random() < uncovered:
            name = unknown_name(rng) if unknown_name else f"Person {rng.randint(100, 999)}"
            out.append(uncovered_dialogue(rng, retrieve, k, context_bytes, name))
            continue
        block = rng.choice(blocks)
        options = slots(block, rng, counts, (block.page, block.position) in leads)
        in_passing = line_slot(block, rng)  # a date, amount, ... said in a sentence (dialogues.line_facts)
        options += [in_passing] if in_passing else []
        if not options:
            continue
        slot = rng.choice(options)
        if slot.kind == "page":
            out.append(page_dialogue(block, retrieve, rng, k, context_bytes))
            continue
        asked = ask(slot, block, rng)
        if asked:
            # drawn only when asked for, so anywhere 0 leaves the random stream as it was
            place = rng.random() if anywhere and rng.random() < anywhere else None
            out.append(grounded_dialogue(block, asked, retrieve, k, context_bytes, place=place))
    return out


def read_split_pages(path: str | Path) -> list[RoamPage]:
    """Pages from the split stage's roam_{train,val}.jsonl (each text: title, newline, page)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: missing (run `dvc repro split` first)") from None
    pages = []
    for record in map(json.loads, lines):
        pages.append(RoamPage(record["id"], record["text"].partition("\n")[2]))
    return pages

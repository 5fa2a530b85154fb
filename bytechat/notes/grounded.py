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
TODOs, page titles and its rarer words (`slots`; the eval asks the same slots in its own
words, bytechat.eval.phrasings). `gold` is the first span the answer copies.
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from bytechat.text.chat_format import format_chat, render_transcript
from bytechat.notes.roam import RoamPage
from bytechat.notes.blocks import ANSWER_PREFIX, TODO_LINE, NoteBlock, lead_blocks, notes_system_content, render_notes
from bytechat.notes.dialogues import frames, spans, summary
from bytechat.notes.dialogues.frames import Said
from bytechat.notes.dialogues.spans import KEY_VALUE
from bytechat.notes.query import query_terms
from bytechat.notes.retrieval import fitting, notes_budget

ABSTAIN = "I couldn't find that in your notes."
_WORD = re.compile(r"[^\W\d_]{4,}", re.UNICODE)
RARE_WORD_BLOCKS = 3  # a keyword question's word occurs in at most this many blocks

Retriever = Callable[[str, int], Sequence[NoteBlock]]


@dataclass(frozen=True)
class Question:
    text: str
    gold: str  # the fact the answer must contain
    kind: str  # attribute | todo | page | keyword
    word: str = ""  # a keyword question's word (other blocks holding it answer it too)
    answer: str = ""  # the whole fact (gold is it clipped)


@dataclass(frozen=True)
class Dialogue:
    messages: list[dict[str, str]]
    gold: str  # the first span the answer copies ("" for an uncovered question)
    kind: str
    page: str  # the page the answer comes from ("" when uncovered)
    spans: tuple[str, ...] = ()  # every piece the answer copies from the notes
    blocks: tuple[NoteBlock, ...] = ()  # the blocks those pieces come from

    def document(self) -> str:
        return render_transcript(self.messages)


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


@dataclass(frozen=True)
class Asked:
    """A training question about a block, and how to answer it in a given room (bytes)."""

    text: str
    kind: str  # the slot's family: attribute | todo | keyword
    reply: Callable[[int | None], Said]


def ask(slot: Slot, block: NoteBlock, rng: random.Random, yes_no: bool = True) -> Asked | None:
    """A training question for slot (TEMPLATES and the finer types of dialogues.frames)
    and its reply: the span in a sentence naming the page. Page questions are answered
    by page_dialogue (a summary of the notes shown)."""
    name = title(block.page)
    asked = _ask(slot, block, rng, yes_no, name)
    if asked is not None and ANSWERS == "clause" and asked.kind == "attribute":
        return Asked(asked.text, asked.kind, lambda room: clause_quoted(block, slot.answer))
    if asked is not None and ANSWERS == "value" and asked.kind == "attribute":
        return Asked(asked.text, asked.kind, lambda room: value_quoted(block, slot.answer))
    if asked is not None and ANSWERS in ("quote", "clause", "value"):
        return Asked(asked.text, asked.kind, lambda room: quoted(block))
    return asked


def _ask(slot: Slot, block: NoteBlock, rng: random.Random, yes_no: bool, name: str) -> Asked | None:
    if slot.kind in ("attribute", "when", "count"):
        key = slot.fields["key"]
        text, qtype, yes = frames.ask_attribute(slot.kind, key, name, slot.answer, rng, TEMPLATES[slot.kind], yes_no)
        return Asked(text, "attribute", lambda room: frames.attribute_reply(qtype, key, name, slot.answer, rng, yes))
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
    return Dialogue(messages, said.spans[0], asked.kind, block.page, said.spans, (block,))


def page_dialogue(block: NoteBlock, retrieve: Retriever, rng: random.Random, k: int, context_bytes: int) -> Dialogue:
    """ "Tell me about X": the notes retrieval shows for the question (the page's most
    informative blocks; the lead block first if retrieval missed the page), summarised."""
    name = title(block.page)
    text = page_question(name, rng)
    hits = list(retrieve(text, k))
    if not any(b.page == block.page for b in hits):
        hits = [block, *(h for h in hits if h != block)]
    shown = fit_notes(hits, text, context_bytes, k)
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
    notes = render_notes(fit_notes(retrieve(text, k), text, context_bytes, k))
    messages = [
        {"role": "system", "content": notes},
        {"role": "user", "content": text},
        {"role": "assistant", "content": ABSTAIN},
    ]
    return Dialogue(messages, "", kind, "")


def word_counts(blocks: Sequence[NoteBlock]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for block in blocks:
        for w in set(_WORD.findall(block.text.lower())):
            counts[w] = counts.get(w, 0) + 1
    return counts


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

"""Conversations: 2-4 turn dialogues, each written out as chat shows the model its last turn.

In chat, every turn's prompt is the system turn with that turn's notes, the earlier
turns that fit the prompt budget, and the newest message (retrieval.with_notes); the
conversation keeps no notes. A conversation here is that prompt for its last turn and
the reply to it:

    system: Notes:
    [Priya] 1:1s every other Thursday at 14:00
    [Priya] relation: my manager since March 2025
    user: how am I related to Priya?
    assistant: Priya is your manager since March 2025.
    user: and when are her 1:1s?
    assistant: ...

The earlier answers are the same sentences the single-turn dialogues teach (they name
their page, so a follow-up can find its topic in them). Patterns (PATTERNS): a follow-up
on the same page with a pronoun or "and ...", "what about ..." (the gold comes from
that page); a thanks or a goodbye after an answer (no notes: a short reply, not a
recycled quote); a new topic after an answer (its own notes); a question the notes do
not cover after an answer (abstain); a greeting first; another joke.

Small talk on its own (dialogues.everyday) is laid out the same way by smalltalk().
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from typing import Callable, Sequence

from bytechat.notes import grounded
from bytechat.notes.blocks import NoteBlock, lead_blocks
from bytechat.notes.dialogues import asking, everyday, frames, summary
from bytechat.notes.dialogues.frames import Said
from bytechat.notes.dialogues.spans import value_span
from bytechat.notes.index import Hit
from bytechat.notes.retrieval import searches, wants_notes, with_notes

Retriever = Callable[[str, int], Sequence[NoteBlock]]

# ------------------------------------------------------------------ follow-up questions
# By question type; {pron} is his/her/their/its, {subj} he/she/they/it, {obj} him/her/
# them/it, {does} does/do, {is} is/are. Each has an anaphor or opens with "and"/"what
# about", as a person asks a follow-up. ("and where does she live?" is a question of the
# hand-written eval set, found by tests/test_pipeline.py: the "lives" pair was reworded.)
FOLLOW_UPS = {
    "what": ("and the {key}?", "what about the {key}?", "and {pron} {key}?", "what's {pron} {key}?"),
    "when": ("and when is {pron} {key}?", "and {pron} {key}?", "what about the {key}?"),
    "when_verb": ("and when did I {verb} {obj}?", "when did I {verb} {obj}?"),
    "born": ("and when was {subj} born?",),
    "since": ("and since when have I had {obj}?",),
    "count": ("and how many {key}?", "what about the {key}, how many?"),
    "count_verb": ("and how many {does} {subj} {verb}?",),
    "who": ("and who's the {key}?", "who is {pron} {key}?"),
    "by": ("and who was {subj} {key}?",),
    "where": ("and where's the {key}?", "what about {pron} {key}?"),
    "lives": ("and what town {is} {subj} in?", "and {pron} home town?"),
    "relation": ("and how am I related to {obj}?", "what's {pron} relation to me?"),
    "todo": ("any open todos for {obj}?", "and what todos are left on {obj}?", "what about the todos there?"),
    "keyword": ("and what about {word}?", "did I write anything about {word} there?"),
    "page": ("tell me more about {obj}", "what else did I write about {obj}?"),
}
PATTERNS = (  # (name, weight): the earlier turns, then the one trained with its notes
    ("follow", 4.0),
    ("thanks", 2.0),
    ("new_topic", 2.0),
    ("follow_thanks", 1.0),
    ("follow_new", 1.0),
    ("greet_fact", 1.0),
    ("greet_follow", 1.0),
    ("uncovered_after", 1.0),
    ("goodbye", 0.5),
    ("joke_another", 0.5),
)
PRONOUNS = {"she": ("she", "her", "her"), "he": ("he", "him", "his"), "they": ("they", "them", "their")}
_WORDS = re.compile(r"[A-Za-z]+")


@dataclass
class Turn:
    user: str
    asked: grounded.Asked | None = None  # a question about block (None: the reply is `reply`)
    reply: str = ""
    block: NoteBlock | None = None
    kind: str = "smalltalk"  # fact | followup | page | smalltalk | uncovered
    said: Said | None = None

    def answer(self, room: int | None = None) -> str:
        """The reply (a question's, made once: in room bytes when it is the last turn)."""
        if self.asked is not None and self.said is None:
            self.said = self.asked.reply(room)
        return self.said.text if self.said else self.reply


def pronouns(page: Sequence[NoteBlock]) -> dict[str, str]:
    """How a follow-up points at a page: a person page by the pronoun its text uses most
    (they when none), anything else as "it"."""
    text = " ".join(b.text for b in page)
    person = "#person" in text or any(b.text.startswith(("birthday: ", "relation: ")) for b in page)
    if not person:
        return {"subj": "it", "obj": "it", "pron": "its", "does": "does", "is": "is"}
    words = [w.lower() for w in _WORDS.findall(text)]
    counts = {
        "she": sum(w in ("she", "her", "hers") for w in words),
        "he": sum(w in ("he", "him", "his") for w in words),
    }
    which = max(counts, key=counts.get) if max(counts.values()) > 0 else "they"
    subj, obj, pron = PRONOUNS[which]
    plural = subj == "they"
    return {"subj": subj, "obj": obj, "pron": pron, "does": "do" if plural else "does", "is": "are" if plural else "is"}


def follow_up_kind(slot: asking.Slot, span: str) -> str:
    """Which FOLLOW_UPS family asks slot."""
    if slot.kind in ("todo", "keyword", "page"):
        return slot.kind
    key = slot.fields["key"].lower()
    qtype = frames.question_type(slot.kind, key, span)
    if qtype == "when" and key in frames.DATE_VERBS:
        return "when_verb"
    if qtype == "when" and key in ("born", "since"):
        return key
    if qtype == "count" and key in frames.COUNT_VERBS:
        return "count_verb"
    if qtype == "who" and key.endswith(" by"):
        return "by"
    return qtype


class Conversations:
    """Builds conversations about blocks (and small talk) the way chat lays them out."""

    def __init__(
        self,
        blocks: Sequence[NoteBlock],
        retrieve: Retriever,
        k: int = 3,
        context_bytes: int = 512,
        unknown_name: Callable[[random.Random], str] | None = None,
    ) -> None:
        self.blocks = list(blocks)
        self.retrieve = retrieve
        self.k = k
        self.context_bytes = context_bytes
        self.unknown_name = unknown_name or (lambda rng: f"Person {rng.randint(100, 999)}")
        self.counts = asking.word_counts(self.blocks)
        self.leads = lead_blocks(self.blocks)
        self.by_page: dict[str, list[NoteBlock]] = {}
        for b in self.blocks:
            self.by_page.setdefault(b.page, []).append(b)

    # -------------------------------------------------------------- turns
    def _slots(self, block: NoteBlock, rng: random.Random) -> list[asking.Slot]:
        return asking.slots(block, rng, self.counts, (block.page, block.position) in self.leads)

    def fact(self, rng: random.Random, page: str | None = None, avoid: NoteBlock | None = None) -> Turn | None:
        """A question about a random block (of page, if given) and its answer."""
        pool = [b for b in self.by_page[page] if b != avoid] if page else self.blocks
        for _ in range(8):
            block = rng.choice(pool)
            options = [s for s in self._slots(block, rng) if s.kind != "page"]
            if options:
                asked = grounded.ask(rng.choice(options), block, rng)
                if asked:
                    return Turn(asked.text, asked, block=block, kind="fact")
        return None

    def follow(self, rng: random.Random, page: str, avoid: NoteBlock | None) -> Turn | None:
        """A follow-up about another block of page, asked with a pronoun or "and ..."."""
        refer = pronouns(self.by_page[page])
        name = asking.title(page)
        for _ in range(8):
            block = rng.choice(self.by_page[page])
            if block == avoid:
                continue
            options = self._slots(block, rng)
            if not options:
                continue
            slot = rng.choice(options)
            if slot.kind == "page":
                return Turn(rng.choice(FOLLOW_UPS["page"]).format(**refer), block=block, kind="page")
            asked = grounded.ask(slot, block, rng, yes_no=False)  # its reply names the page
            if not asked:
                continue
            span = slot.answer if slot.kind == "keyword" else value_span(slot.answer)
            family = follow_up_kind(slot, span)
            key = slot.fields.get("key", "")
            fields = {**refer, "key": frames.key_words(key), "word": slot.word, "title": name}
            fields["verb"] = frames.DATE_VERBS.get(key.lower(), key.lower()[:-1])
            text = rng.choice(FOLLOW_UPS[family]).format(**fields)
            return Turn(text, asked, block=block, kind="followup")
        return None

    # -------------------------------------------------------------- layout
    def _hits(self, blocks: Sequence[NoteBlock]) -> list[Hit]:
        return [Hit(b.page, b.text, 0.0, b.position) for b in blocks]

    def _shown(self, first: NoteBlock | None, search: str, question: str) -> list[NoteBlock]:
        """The notes a turn shows: the answering block first (placed last), then the
        other hits of search, within chat's budget for question."""
        found = list(self.retrieve(search, self.k + 1))
        ranked = [first, *(b for b in found if b != first)] if first else found
        return grounded.fit_notes(ranked, question, self.context_bytes, self.k)

    def lay_out(self, earlier: list[Turn], last: Turn, rng: random.Random, topic: str = "") -> grounded.Dialogue:
        """The last turn's prompt as chat builds it (retrieval.with_notes with the engine's
        prompt budget) and its reply, fitted to the room the window leaves."""
        history = []
        for t in earlier:
            history += [{"role": "user", "content": t.user}, {"role": "assistant", "content": t.answer()}]
        messages = [*history, {"role": "user", "content": last.user}]
        search = f"{topic}\n{last.user}" if topic else last.user
        spans: tuple[str, ...] = ()
        blocks: tuple[NoteBlock, ...] = ()
        page = ""
        if last.kind in ("fact", "followup"):
            shown = self._shown(last.block, search, last.user)
        elif last.kind == "page":
            found = list(self.retrieve(search, self.k))
            if not any(b.page == last.block.page for b in found):
                found = [last.block, *found]
            shown = grounded.shown_as_chat(found, last.user, self.context_bytes, self.k)
        elif wants_notes(messages):
            shown = grounded.shown_as_chat(self.retrieve(last.user, self.k), last.user, self.context_bytes, self.k)
        else:
            shown = []
        prompt = with_notes(messages, self._hits(shown), budget_bytes=self.context_bytes * 3 // 4)
        room = grounded.room(prompt, self.context_bytes)
        fact = ""  # what the span head points at (grounded.Dialogue.answer_span)
        if last.kind == "page":
            picked = summary.chosen(last.block.page, shown)
            said = grounded.page_reply(asking.title(last.block.page), picked, last.block, rng, room)
            spans, blocks, page = said.spans, tuple(picked), last.block.page
            reply = said.text
        elif last.asked is not None:
            said = last.asked.reply(room)
            spans, blocks, page, reply = said.spans, (last.block,), last.block.page, said.text
            fact = last.asked.fact or (said.spans[0] if grounded.ANSWERS == "span" else "")
        else:
            reply = last.reply
        gold = spans[0] if spans else ""
        messages = [*prompt, {"role": "assistant", "content": reply}]
        return grounded.Dialogue(messages, gold, "conv_" + last.kind, page, spans, blocks, fact)

    # -------------------------------------------------------------- conversations
    def conversation(self, rng: random.Random) -> grounded.Dialogue | None:
        names, weights = zip(*PATTERNS)
        pattern = rng.choices(names, weights)[0]
        first = self.fact(rng)
        if first is None:
            return None
        page = first.block.page
        if pattern == "follow":
            last = self.follow(rng, page, first.block)
            return last and self.lay_out([first], last, rng, first.user)
        if pattern == "thanks":
            return self.lay_out([first], self.small(rng, "thanks"), rng)
        if pattern == "goodbye":
            return self.lay_out([first], self.small(rng, "goodbye"), rng)
        if pattern == "new_topic":
            other = self.fact(rng)
            return other and other.block.page != page and self.lay_out([first], other, rng) or None
        if pattern == "uncovered_after":
            return self.lay_out([first], self.uncovered(rng), rng)
        if pattern in ("follow_thanks", "follow_new"):
            second = self.follow(rng, page, first.block)
            if second is None or second.kind == "page":
                return None
            if pattern == "follow_thanks":
                return self.lay_out([first, second], self.small(rng, "thanks"), rng)
            other = self.fact(rng)
            return other and other.block.page != page and self.lay_out([first, second], other, rng) or None
        greet = self.small(rng, rng.choice(("greeting", "greeting_time", "how_are_you")))
        if pattern == "greet_fact":
            return self.lay_out([greet], first, rng)
        if pattern == "greet_follow":
            last = self.follow(rng, page, first.block)
            return last and self.lay_out([greet, first], last, rng, first.user)
        joke = self.small(rng, "joke")
        more = everyday.another_joke(joke.reply, rng)
        return self.lay_out([joke], Turn(more.prompt, reply=more.reply), rng)

    def small(self, rng: random.Random, topic: str | None = None) -> Turn:
        t = everyday.talk(rng, topic)
        return Turn(t.prompt, reply=t.reply)

    def uncovered(self, rng: random.Random) -> Turn:
        topic = rng.choice((*asking.UNCOVERED_TOPICS, f"{self.unknown_name(rng)}'s birthday"))
        text = rng.choice(asking.UNCOVERED_TEMPLATES).format(topic=topic)
        return Turn(text, reply=grounded.ABSTAIN, kind="uncovered")

    def smalltalk(self, rng: random.Random) -> grounded.Dialogue | None:
        """One small-talk exchange, searched as chat searches a phrasing it does not know
        for small talk (retrieval.searches; what it knows gets no notes at all:
        retrieval.is_small_talk), so the reply is taught to ignore notes that do not
        answer it; a refusal only where retrieval found nothing (else the notes may well
        answer it)."""
        t = everyday.talk(rng)
        messages = [{"role": "user", "content": t.prompt}]
        shown = []
        if searches(messages):
            shown = grounded.shown_as_chat(self.retrieve(t.prompt, self.k), t.prompt, self.context_bytes, self.k)
            if shown and t.refusal:
                return None
        prompt = with_notes(messages, self._hits(shown), budget_bytes=self.context_bytes * 3 // 4)
        return grounded.Dialogue([*prompt, {"role": "assistant", "content": t.reply}], "", "everyday_" + t.topic, "")


def make(
    conversations: Conversations, rng: random.Random, n: int, builder: str = "conversation"
) -> list[grounded.Dialogue]:
    """n conversations (builder "conversation") or small-talk dialogues ("smalltalk")."""
    build = conversations.conversation if builder == "conversation" else conversations.smalltalk
    out: list[grounded.Dialogue] = []
    tries = 0
    while len(out) < n and tries < 20 * n + 20:
        tries += 1
        d = build(rng)
        if d is not None:
            out.append(d)
    return out

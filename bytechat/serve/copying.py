"""Faithful decoding: a quote of the notes is verbatim, and any other reply is one of the
bot's own sentences.

Trained with `grounded.answers: quote`, the model answers `From [Page] <block text>`, a
quote of one block the prompt shows (a page question: several of the page's blocks, one
per line); everything else it says (abstentions, small talk) is a sentence of its
training data. Decoding freely, it often picks the right block and then copies it badly
(a loop, a skipped line: docs/notes.md, "Where the model loses to the search box"), and
its small talk drifts into word salad on notes it never saw. With
`SamplingConfig(faithful=True)` the sampler keeps the reply to what it was taught:

- once a reply starts with `From [`, every next byte must keep it a prefix of some shown
  quote `From [Page] <block text>` (exactly the bytes training writes: grounded.quoted,
  the chat format's escaping), or of an attribute's quote without its key (`From [Jonas]
  14 February`, as `grounded.answers: value` teaches). With BEST_FIRST (shipped) a
  reply's first quote is of the block placed last (retrieval's best). A fact question
  the model's span head answers may quote only that span (bytechat.serve.span_answer);
- with WHOLE_QUOTES (shipped) the reply may end only where a quote is whole, as every
  quote training writes is (a block's first line is no answer when its next line holds
  the fact); without it, anywhere from the page name's "]" on. Once no shown quote
  extends the reply, the end is forced. After a whole quote, "\nFrom [" may start the
  quote of another shown block (each once), only if it fits, stop tag and all, in the
  reply's room (SamplingConfig.max_new_bytes); with ONE_FACT_ONE_QUOTE (shipped), only
  for a question about the whole page, and with PAGE_FILL (shipped) that reply goes on
  while the page's telling blocks fit. Inside a quote the repeat guard is off (restrict);
- with OWN_WORDS (shipped), where the prompt shows no notes (small talk, "Notes: none
  found.") the reply must stay a prefix of one of own_sentences (the small talk of
  dialogues.everyday with every filler, the abstention, the primer's replies in its
  dialogues without notes) and ends where that sentence ends, so small talk stays
  grammatical on notes it never saw. With SMALL_TALK_ACTS (shipped), a message that
  reads as small talk of one kind (bytechat.notes.intent: thanks, a goodbye, feeling
  low) gets one of that kind's sentences. With NOTES_OWN_WORDS (shipped) the same holds
  where notes are shown, for a reply that opens no quote, and with
  QUESTIONS_QUOTE_OR_ABSTAIN (shipped) a question's only such reply is the abstention,
  taken only where the model prefers it by a margin (ABSTAIN_MARGIN, or the model's
  own); with NONE_FOUND_ABSTAINS (shipped), a question retrieval found nothing for gets
  the abstention or a refusal;
- a model taught `grounded.answers: span` (its checkpoint's answer_style) answers in
  sentences of its own making: with SPAN_FRAMES (shipped) such a reply is one of the
  frames its dialogues are written with, the notes copied into its slots
  (bytechat.serve.span_frames); without, it is free.

The quotes come from the prompt itself (its system turn's notes, laid out by
bytechat.notes.blocks.render_notes), so generate_bytes and the batch engine need only the
prompt bytes and the switch. The constraint is applied as an allowed set: sample_rows
sets every other byte's score to -inf before top-k, temperature and top-p (greedy takes
the best allowed byte).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bytechat.notes import intent
from bytechat.notes.blocks import is_tags_only
from bytechat.notes.dialogues.spans import KEY_VALUE
from bytechat.notes.dialogues.summary import MAX_ITEMS
from bytechat.notes.grounded import ABSTAIN, ANSWER_PREFIX
from bytechat.notes.query import names_page
from bytechat.serve.own_words import (
    continuations,
    encoded,
    found_none,
    holds,
    last_user,
    none_found_sentences,
    own_sentences,
    small_talk_act,
)
from bytechat.serve.prompt_notes import prompt_messages, shown_entries
from bytechat.serve.sampling import RepeatGuard
from bytechat.serve.span_frames import QuotesOrFrames, SpanFrames, sources_of
from bytechat.text.chat_format import STOP_TAGS, escape_content, tag_continuations

# Whether chat and the web API decode faithfully unless told otherwise (--no-faithful,
# "faithful": false); the eval stage's own switch is params.yaml eval.faithful. On: better
# answer_f1 on heldout_train, heldout_val and natural_dev, same abstentions (docs/chat.md).
# SamplingConfig itself defaults to off, so library callers (the answer probe, tools) sample freely.
SHIPPED = True
# Whether faithful decoding also keeps a reply that is not a quote to the bot's own
# sentences (own_sentences): measured in docs/chat.md.
OWN_WORDS = True
# Whether a quote may end only where it is whole (the end of the shown block, or of its
# value), as every quote training writes does; off, it may end at any character from the
# page name's "]" on. On: answer_contains +0.03-0.05 on every eval set (docs/chat.md).
WHOLE_QUOTES = True
# Whether the first quote of a reply must be of the block placed last (retrieval's best,
# where training puts the answering block), so retrieval chooses the block and the model
# whether to quote, how much and what follows. On: the smoke model's own choice lost more
# facts than it found (natural_dev answer_contains 0.63 -> 0.66; docs/chat.md).
BEST_FIRST = True
# Whether a reply opened the primer's way ("On your Bagels page: ...") must go on as a
# quote of a shown block in that frame, as a `From [` reply must. On: the primer's opening
# no longer runs into salad (natural_dev answer_contains 0.66 -> 0.71; docs/chat.md).
FRAMED_QUOTES = True
# Whether OWN_WORDS holds where notes are shown too: a reply that opens no quote is one of
# own_sentences (off, it ran into salad: "Sure. Want to record in your notes."). Only for
# a quoting model: a `grounded.answers: span` one's own sentences would be bent into the
# abstention (SPAN_STYLE; measured in docs/chat.md).
NOTES_OWN_WORDS = True
SPAN_STYLE = "span"  # the answer style (params.yaml grounded.answers) whose answers are no quotes
# Whether a span-taught model's answers are kept to its frames with copies of the notes in
# their slots (bytechat.serve.span_frames), as a quote is kept to the notes; with notes
# shown its other replies are then its own sentences (NOTES_OWN_WORDS). Measured: docs/chat.md.
SPAN_FRAMES = True
# Whether small talk (bytechat.notes.intent: "thanks", "goodbye", ...) shown no notes gets
# one of its act's sentences, the model choosing which: it knows its sentences but not which
# act a new phrasing is ("see you tomorrow" -> "Sorry to hear that. ..."; docs/chat.md).
SMALL_TALK_ACTS = True
# Whether a reply may quote several blocks only when the question asks about a page as a
# whole (query.names_page: "what did I write about sourdough?"); a question for one fact
# ("how many almonds go into the granola?") gets its one quote. Off, the model chooses,
# and with short blocks it went on after a fact's quote (docs/notes.md, "Blocks of one
# child, and quotes that fit").
ONE_FACT_ONE_QUOTE = True
# Whether a whole-page question's reply goes on quoting the page's telling blocks shown
# (_telling) until it holds summary.MAX_ITEMS quotes or none fits; off, the model stops
# where it likes, and 35% of its training page replies were cut to one quote (docs/chat.md).
PAGE_FILL = True
# Whether, with NOTES_OWN_WORDS, a question shown notes (not small talk) that opens no quote
# may only abstain, not say another of the bot's sentences: "wen do i treat the bees for
# varoa" got "You're welcome 🙂" (docs/notes.md, "Blocks of one child, and quotes that fit").
QUESTIONS_QUOTE_OR_ABSTAIN = True
# Whether a question retrieval found nothing for ("Notes: none found.", a message shaped
# as a question that does not read as small talk) is answered as training answers it: the
# abstention, or a refusal that says the notes do not cover it; not any other of the bot's
# sentences. The train profile's model answered "what did I decide about my pension
# number" with "Finding things in your notes: pages, dates, tasks and summaries."; a
# goodbye that found nothing ("later, gotta run") keeps every sentence (docs/chat.md,
# "None found").
NONE_FOUND_ABSTAINS = True
# With QUESTIONS_QUOTE_OR_ABSTAIN, a question shown notes abstains only where the model
# prefers the abstention to a quote by a margin, in nats (its first byte's log-probability,
# "I" against "F"). Each model's own is calibrated by the eval stage and carried by its
# export (bytechat/eval/refusals.py); this is the margin of a model without one (a
# checkpoint, an export from before): 3 (20 to 1), the smallest at which no dev question
# of two smoke models was refused that way, where at 0 32 of their 36 such refusals were
# of answerable questions (docs/chat.md).
ABSTAIN_MARGIN = 3.0
OPENING = (ANSWER_PREFIX + "[").encode("utf-8")  # b"From [": from here on, a reply is a quote
# The primer's answers from notes name the page in a frame (head, page, tail, then the
# block), and every frame opens with FRAMED.
FRAMES = (("On your page on ", ": "), ("On your ", " page: "))
FRAMED = b"On your "
_NEWLINE = b"\n"
_NEXT = _NEWLINE + OPENING  # a page question's reply may quote several of the page's blocks, one per line
_TAG_BYTES = min(len(tag.encode("utf-8")) for tag in STOP_TAGS)  # the least a reply's end takes


def _a_question(text: str) -> bool:
    """What NONE_FOUND_ABSTAINS answers as a question: it reads as one (intent.reads_as_question)
    and not as small talk."""
    return intent.reads_as_question(text) and not intent.reads_as_small_talk(text)


class FaithfulCopy:
    """Which next bytes keep a reply a faithful quote of one of `entries`, or (a prompt
    without notes) one of `sentences` (see above).

    `allowed(produced)` is None (unconstrained) or the sorted byte values the reply may
    go on with. It reads the whole reply each time (a few bytes.startswith per shown
    block), so it holds no state and a batch row or a refilled window cannot desync it.
    """

    may_loop = False  # a quote only moves forward through a shown block (restrict)

    def __init__(
        self,
        entries: Sequence[str],
        sentences: Sequence[bytes] = (),
        whole: bool = False,
        best_first: bool = False,
        framed: bool = False,
        room: int | None = None,
        several: bool = True,
        reluctant: bool = False,
        margin: float | None = None,
        fill: bool = False,
    ) -> None:
        self.sentences = sorted(set(sentences))  # the bot's own replies; () leaves other replies free
        self.several = several  # whether another shown block's quote may follow a whole one
        # fill: the further quotes are of the best block's page, and the reply goes on while one fits
        self.fill = _telling(entries) if fill and entries else None
        self.room = room  # the reply's bytes in all (None: no limit); a further quote must fit
        self.best = len(entries) - 1 if best_first else None  # the entry a reply's first quote must be of
        self.quotes: list[bytes] = []
        self.first_stop: list[int] = []  # per quote: the reply may end once it is this long
        self.entry: list[int] = []  # per quote: which shown entry it quotes
        self.framed = framed
        self.reluctant = reluctant  # whether a reply's first byte lowers the abstention (ABSTAIN_MARGIN)
        self.margin = ABSTAIN_MARGIN if margin is None else float(margin)  # by how much, in nats
        for e, entry in enumerate(entries):
            said = [(ANSWER_PREFIX + x, len(ANSWER_PREFIX) + x.index("] ") + 1) for x in (entry, *_without_key(entry))]
            for text, named in said + (_in_frames(entry) if framed else []):
                quote = escape_content(text).encode("utf-8")
                if quote not in self.quotes:
                    self.quotes.append(quote)
                    self.first_stop.append(len(quote) if whole else len(escape_content(text[:named]).encode("utf-8")))
                    self.entry.append(e)

    @classmethod
    def from_messages(
        cls,
        messages: Sequence[Mapping[str, str]],
        own_words: bool = False,
        whole: bool = False,
        best_first: bool = False,
        framed: bool = False,
        notes_own_words: bool = False,
        room: int | None = None,
        margin: float | None = None,
    ) -> FaithfulCopy | None:
        entries = shown_entries(messages)
        if entries:
            asked, best = last_user(messages) or "", entries[-1]
            sentences = own_sentences() if own_words and notes_own_words else ()
            only_abstain = bool(sentences) and QUESTIONS_QUOTE_OR_ABSTAIN and not intent.reads_as_small_talk(asked)
            if only_abstain:
                sentences = encoded([ABSTAIN])
            whole_page = names_page(asked, best[1 : best.index("] ")])  # "tell me about Jonas"
            several = not ONE_FACT_ONE_QUOTE or whole_page
            fill = PAGE_FILL and whole_page
            return cls(entries, sentences, whole, best_first, framed, room, several, only_abstain, margin, fill)
        if not own_words:
            return None
        asked = last_user(messages)
        if NONE_FOUND_ABSTAINS and asked is not None and found_none(messages) and _a_question(asked):
            return cls([], none_found_sentences())
        act = small_talk_act(messages) if SMALL_TALK_ACTS else None
        return cls([], own_sentences(act, asked if act else None))

    @classmethod
    def from_prompt(
        cls,
        prompt: bytes,
        own_words: bool = False,
        whole: bool = False,
        best_first: bool = False,
        framed: bool = False,
        notes_own_words: bool = False,
        room: int | None = None,
    ) -> FaithfulCopy | None:
        """The machine for the notes a chat prompt shows, or (own_words) for a prompt that
        shows none, the bot's own sentences; None when it would constrain nothing.
        notes_own_words: with own_words, a reply that opens no quote where notes are shown
        is one of the bot's own sentences too. room: the reply's byte limit."""
        return cls.from_messages(prompt_messages(prompt), own_words, whole, best_first, framed, notes_own_words, room)

    def answer_with(self, span: str) -> None:
        """Allow one quote only: `From [Page] span` of the best block (bytechat.serve.span_answer)."""
        entry = self.best if self.best is not None else max(self.entry)
        page = next(q for q, e in zip(self.quotes, self.entry) if e == entry).split(b"] ", 1)[0]
        quote = page + b"] " + escape_content(span).encode("utf-8")
        self.quotes, self.first_stop, self.entry, self.several, self.fill = [quote], [len(quote)], [entry], False, None
        self.framed = False  # the one quote opens `From [`: a reply opened "On your " would have none left to copy

    def quoting(self, reply: bytes) -> bool:
        """Whether reply opens as a quote (`From [`, or framed: "On your ")."""
        return reply.startswith(OPENING) or (self.framed and reply.startswith(FRAMED))

    def allowed(self, produced: bytes | bytearray) -> list[int] | None:
        reply = bytes(produced)
        if not self.quoting(reply):
            return self._own(reply)  # still (a prefix of) an opening, or not a quote at all
        *earlier, current = reply.split(_NEXT)
        used: set[int] = set()
        for i, part in enumerate(earlier):
            ends = self._ends(part if i == 0 else OPENING + part, whole=True)
            if not ends:
                return None  # an earlier quote left the notes (a switch turned on mid-reply)
            used.update(ends)
        current = current if not earlier else OPENING + current
        nexts: set[int] = set()
        cut = current.rfind(_NEWLINE)
        tail = current[cut:] if cut >= 0 else b""  # a stop tag or the next quote being written: "\n", "\nus", "\nFr"
        ended_at_cut = bool(tail) and bool(self._ends(current[:cut], used))
        whole_at_cut = self._ends(current[:cut], used, whole=True) if tail else set()
        base = len(reply) - len(current)  # the reply's bytes before the quote being written
        for n, (quote, first_stop) in enumerate(zip(self.quotes, self.first_stop)):
            if self.entry[n] in used or (not earlier and self.best not in (None, self.entry[n])):
                continue  # a page's block is quoted once per reply; the first, with best_first, is the best
            if earlier and (not self._fits(base, quote) or (self.fill is not None and self.entry[n] not in self.fill)):
                continue  # a further quote only where it fits whole (and, filling, of the page)
            if quote.startswith(current):
                if len(current) < len(quote):
                    nexts.add(quote[len(current)])
                if len(current) >= first_stop and _boundary(quote, len(current)):
                    nexts.add(_NEWLINE[0])
        if ended_at_cut:
            at = len(reply) - len(tail) + len(_NEWLINE)  # where another quote would start
            others = {self.entry[n] for n, q in enumerate(self.quotes) if self._fits(at, q)} - used - whole_at_cut
            if self.fill is not None:  # filling a page's reply: only its telling blocks follow
                others &= self.fill
            go_on = self.several and whole_at_cut and others and len(tail) < len(_NEXT) and _NEXT.startswith(tail)
            if not (go_on and self.fill is not None and len(earlier) + 1 < MAX_ITEMS):
                nexts.update(tag_continuations(tail))  # filling a page's reply, it may not end yet
            if go_on:
                nexts.add(_NEXT[len(tail)])
        # Empty only if the reply left the quotes before the constraint applied (a switch
        # turned on mid-reply): then nothing is constrained rather than nothing allowed.
        return sorted(nexts) if nexts else None

    def lowered(self, produced: bytes | bytearray) -> list[int]:
        """The first bytes of the bot's own sentences, at a reply's first byte where a
        question shown notes may only quote or abstain (ABSTAIN_MARGIN lowers them)."""
        if produced or not self.reluctant or not self.quotes:
            return []
        openings = {o[0] for o in ((OPENING, FRAMED) if self.framed else (OPENING,))}
        return sorted({s[0] for s in self.sentences if s} - openings)

    def _fits(self, start: int, quote: bytes) -> bool:
        """Whether quote, begun at byte start of the reply, ends with a stop tag in room."""
        return self.room is None or start + len(quote) + _TAG_BYTES <= self.room

    def _own(self, reply: bytes) -> list[int] | None:
        """A reply that is no quote: one of the bot's own sentences, whole, then a stop tag.
        None without sentences (no constraint), or once the reply has left them (a switch
        turned on mid-reply)."""
        if not self.sentences:
            return None
        nexts = continuations(self.sentences, reply)
        if self.quotes:  # notes are shown: the reply may still open a quote
            openings = (OPENING, FRAMED) if self.framed else (OPENING,)
            nexts.update(o[len(reply)] for o in openings if len(o) > len(reply) and o.startswith(reply))
        if holds(self.sentences, reply):
            nexts.add(_NEWLINE[0])
        cut = reply.rfind(_NEWLINE)
        if cut >= 0 and holds(self.sentences, reply[:cut]):
            tail = reply[cut:]
            nexts.update(tag_continuations(tail))
        return sorted(nexts) if nexts else None

    def _ends(self, said: bytes, used: set[int] = frozenset(), whole: bool = False) -> set[int]:
        """The entries (not in used) that said quotes up to where a reply may end; whole:
        quotes whole (another block's quote may only follow a whole one)."""
        ends = set()
        for n, (quote, first_stop) in enumerate(zip(self.quotes, self.first_stop)):
            if whole:
                fits = said == quote
            else:
                fits = len(said) >= first_stop and quote.startswith(said) and _boundary(quote, len(said))
            if fits and self.entry[n] not in used:
                ends.add(self.entry[n])
        return ends


def _telling(entries: Sequence[str]) -> set[int]:
    """The shown entries of the best's (last's) page that say something: not tags only (as
    summary.chosen), nor a header alone that a shown group of its children opens with,
    whole or clipped (`Working with her`, `Reads more than anyone I know. Her recommendati…`)."""
    page = entries[-1][: entries[-1].index("] ") + 2]
    heads = {o.split("\n", 1)[0] for o in entries if o.startswith(page) and "\n" in o}

    def said(e: str) -> bool:  # a header alone that a group says
        return "\n" not in e and any(e == h or (h.endswith("…") and e.startswith(h[:-1])) for h in heads)

    return {n for n, e in enumerate(entries) if e.startswith(page) and not is_tags_only(e[len(page) :]) and not said(e)}


def _in_frames(entry: str) -> list[tuple[str, int]]:
    """An entry said in the primer's frames, each with where its page name ends."""
    page, _, text = entry[1:].partition("] ")
    return [(f"{head}{page}{tail}{text}", len(head) + len(page)) for head, tail in FRAMES]


def _without_key(entry: str) -> list[str]:
    """An attribute's entry as `grounded.answers: value` quotes it, its key left out
    ("[Jonas] Birthday: 14 February" -> "[Jonas] 14 February"); [] for other blocks."""
    page, _, text = entry.partition("] ")
    head = KEY_VALUE.match(text.split("\n", 1)[0])
    return [f"{page}] {text[head.start(2) :]}"] if head else []


def _boundary(quote: bytes, at: int) -> bool:
    """Whether a reply may end after quote[:at]: not inside a UTF-8 character."""
    return at >= len(quote) or not 0x80 <= quote[at] < 0xC0


def copy_guard(
    prompt: bytes,
    faithful: bool,
    answer_style: str | None = None,
    room: int | None = None,
    abstain_margin: float | None = None,
    span: str | None = None,
) -> FaithfulCopy | QuotesOrFrames | None:
    """The machine generate_bytes and the batch engine decode a prompt's reply with:
    None when the switch is off (or there is nothing to constrain). answer_style: how the
    model was taught to answer (its checkpoint's `answer_style`; None: not recorded, a
    quote, as every checkpoint before it was). room: the reply's byte limit
    (max_new_bytes), which a page question's further quotes must fit. abstain_margin: the
    model's own (an export's, calibrated by the eval stage: bytechat.eval.refusals), or
    None for ABSTAIN_MARGIN. span: the answer a fact question's span head points at
    (bytechat.serve.span_answer), then the one quote a reply may be."""
    if not faithful:
        return None
    span_style = answer_style == SPAN_STYLE
    notes_own_words = NOTES_OWN_WORDS and (not span_style or SPAN_FRAMES)
    messages = prompt_messages(prompt)
    quotes = FaithfulCopy.from_messages(
        messages, OWN_WORDS, WHOLE_QUOTES, BEST_FIRST, FRAMED_QUOTES, notes_own_words, room, abstain_margin
    )
    if span and not span_style and quotes is not None and quotes.quotes:
        quotes.answer_with(span)
    entries = shown_entries(messages) if span_style and SPAN_FRAMES else []
    return QuotesOrFrames(quotes, SpanFrames(*sources_of(entries))) if entries and quotes else quotes


def restrict(
    copy: FaithfulCopy | QuotesOrFrames | None, guard: RepeatGuard, produced: bytearray
) -> tuple[list[int], list[int] | None, list[int], float]:
    """(banned, allowed, lowered, margin) for the reply's next byte (a Draw's last four
    fields). Inside a quote the repeat guard is off: a quote cannot loop (it only moves
    forward through a shown block), and a block that repeats a 16-byte run of itself must
    still be quoted."""
    allowed = copy.allowed(produced) if copy is not None else None
    if allowed is None:
        return guard.banned(produced), None, [], 0.0
    lowered = copy.lowered(produced) if isinstance(copy, FaithfulCopy) else []
    if copy.may_loop:  # a frame's copies can go round: the guard stays on
        banned = set(guard.banned(produced))
        allowed = [b for b in allowed if b not in banned] or allowed
    return [], allowed, lowered, copy.margin if lowered else 0.0

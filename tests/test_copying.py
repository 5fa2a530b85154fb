"""Faithful-copy decoding (bytechat.serve.copying): the state machine's allowed bytes, and
replies under SamplingConfig(faithful=True) through generate_bytes, ChatEngine and the
batch engine: a reply that starts "From [" is always a prefix of a shown quote."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from bytechat.core import paths
from bytechat.core.rng import make_generator
from bytechat.data.primer import load_primer
from bytechat.model import GPT
from bytechat.notes import grounded
from bytechat.notes.blocks import NoteBlock, all_blocks, notes_system_content, render_notes
from bytechat.notes.dialogues import everyday
from bytechat.notes.dialogues.spans import KEY_VALUE
from bytechat.serve import copying
from bytechat.serve.batch_engine import BatchEngine
from bytechat.serve.copying import OPENING, FaithfulCopy
from bytechat.serve.prompt_notes import shown_entries
from bytechat.serve.generate import ChatEngine, ReplyDone, generate_bytes
from bytechat.serve.sampling import Draw, RepeatGuard, SamplingConfig, sample_rows
from bytechat.notes.index import NotesIndex
from bytechat.text.chat_format import STOP_TAGS, escape_content, extract_assistant_reply, format_chat
from tests.helpers import RecordingEngine, model_config, overfit

TAGS = tuple(t.encode() for t in STOP_TAGS)
JONAS = NoteBlock("Jonas", "birthday: 14 February", 0)
STARTER = NoteBlock("Sourdough Starter", "Feeding\n  Ratio 1:1:1 by weight\n  the night before", 1)
JONAS_LONG = NoteBlock("Jonas", "birthday: 14 February, joke: never forget", 2)
PAGE_QUESTION = "tell me about Jonas"  # the whole page asked: a reply may quote several blocks


def chat(blocks, question: str = "when is Jonas's birthday?", system: str | None = None) -> list[dict[str, str]]:
    """A chat turn's messages with blocks shown (best first), as retrieval.with_notes lays them out."""
    content = notes_system_content(render_notes(blocks), system) if blocks is not None else system
    head = [{"role": "system", "content": content}] if content is not None else []
    return [*head, {"role": "user", "content": question}]


def machine(blocks, **kw) -> FaithfulCopy:
    return FaithfulCopy.from_prompt(format_chat(chat(blocks, **kw)).encode())


def allowed(m: FaithfulCopy, reply: str | bytes) -> bytes | None:
    got = m.allowed(reply.encode() if isinstance(reply, str) else reply)
    return None if got is None else bytes(got)


def quote(block: NoteBlock) -> bytes:
    return grounded.quoted(block).text.encode()


def quotes(block: NoteBlock) -> list[bytes]:
    """A block's quote, and an attribute's without its key (grounded.answers: value)."""
    head = KEY_VALUE.match(block.text.split("\n", 1)[0])
    return [quote(block)] + ([grounded.value_quoted(block, head.group(2)).text.encode()] if head else [])


# ---------------------------------------------------------------- the machine


def test_the_quotes_are_exactly_what_training_writes():
    m = machine([JONAS, STARTER])
    assert sorted(m.quotes) == sorted([quote(JONAS), b"From [Jonas] 14 February", quote(STARTER)])
    assert quote(JONAS) == b"From [Jonas] birthday: 14 February"
    assert grounded.value_quoted(JONAS, "14 February").text == "From [Jonas] 14 February"


def test_allowed_sets(monkeypatch):
    monkeypatch.setattr(copying, "PAGE_FILL", False)  # a page reply's further quotes: any shown block
    m = machine([JONAS, STARTER], question=PAGE_QUESTION)
    for free in ("", "F", "From", "From ", "I couldn't find that", "Hi! What do you need?", "From  [", "from ["):
        assert allowed(m, free) is None, free
    assert allowed(m, "From [") == b"JS"  # the model picks the block
    assert allowed(m, "From [Jo") == b"n"
    assert allowed(m, "From [Jonas") == b"]"  # not before the page name ends
    assert allowed(m, "From [Jonas]") == b"\n "  # may end from here on
    assert allowed(m, "From [Jonas] ") == b"\n1b"  # the key, or straight to the value
    assert allowed(m, "From [Jonas] 14 February") == b"\n"
    assert allowed(m, "From [Jonas] birthday: 1") == b"\n4"
    assert allowed(m, "From [Jonas] birthday: 14 February") == b"\n"  # complete: the end is forced
    assert allowed(m, "From [Jonas] birthday: 14 February\n") == b"Fasu"  # a stop tag, or another block's quote
    assert allowed(m, "From [Jonas] birthday: 14 February\nus") == b"e"
    assert allowed(m, "From [Jonas] birth\nsystem") == b":"
    # A block's child line: its newline both goes on with the quote and may start a stop tag.
    assert allowed(m, "From [Sourdough Starter] Feeding\n") == b"\n asu"
    assert allowed(m, "From [Sourdough Starter] Feeding\n  R") == b"\na"


def test_whole_quotes_end_only_where_the_block_or_its_value_ends(monkeypatch):
    """WHOLE_QUOTES: as training quotes, never a block's first line alone."""
    monkeypatch.setattr(copying, "PAGE_FILL", False)
    m = FaithfulCopy.from_prompt(format_chat(chat([JONAS, STARTER], PAGE_QUESTION)).encode(), whole=True)
    assert allowed(m, "From [Jonas]") == b" "
    assert allowed(m, "From [Jonas] 14 February") == b"\n"  # the value's quote is whole
    assert allowed(m, "From [Jonas] birthday: 1") == b"4"
    assert allowed(m, "From [Sourdough Starter] Feeding") == b"\n"
    assert allowed(m, "From [Sourdough Starter] Feeding\n") == b" ", "no stop tag inside the block"
    assert allowed(m, "From [Sourdough Starter] Feeding\n  Ratio 1:1:1 by weight\n  the night before\n") == b"Fasu"
    assert allowed(m, "From [Jonas] birthday: 14 February\nFrom [Sourdough Starter] Feeding\n") == b" "


def test_a_page_question_may_quote_several_blocks_each_once(monkeypatch):
    """summary.quotes: "tell me about X" answers with the page's blocks quoted one per line;
    each quote is as exact as a single one, and a block is not quoted twice."""
    monkeypatch.setattr(copying, "PAGE_FILL", False)  # any shown block, the model choosing when to stop
    m = machine([JONAS, STARTER], question=PAGE_QUESTION)
    first = "From [Jonas] birthday: 14 February\n"
    assert allowed(m, first + "Fr") == b"o"
    assert allowed(m, first + "From [") == b"S"  # Jonas is quoted already
    assert allowed(m, first + "From [Sourdough Starter] Feeding\n") == b"\n asu"  # nothing left to quote
    assert allowed(m, "From [Jonas] 14 February\nFrom [") == b"S"  # the value's quote is the same block
    assert allowed(machine([JONAS], question=PAGE_QUESTION), "From [Jonas] birthday: 14 February\n") == b"asu"
    assert allowed(m, "From [Jonas] birth\n") == b"asu"  # another quote only after a whole one
    assert allowed(m, "From [Jonas] bday\nFrom [") is None  # the first was no quote: unconstrained


def test_a_further_quote_starts_only_where_it_fits_the_reply_whole(monkeypatch):
    """A page question's reply is never cut inside a quote by the reply's byte limit: after
    a whole quote another starts only if it and a stop tag fit in what is left."""
    monkeypatch.setattr(copying, "PAGE_FILL", False)
    first = quote(JONAS) + b"\n"
    need = len(first) + len(quote(STARTER)) + min(len(t) for t in TAGS)  # the second quote, whole, then a tag
    prompt = format_chat(chat([JONAS, STARTER], PAGE_QUESTION)).encode()
    for room, nexts in ((need, b"Fasu"), (need - 1, b"asu"), (None, b"Fasu")):
        m = FaithfulCopy.from_prompt(prompt, room=room)
        assert allowed(m, first) == nexts, room
    assert allowed(FaithfulCopy.from_prompt(prompt, room=10), b"From [") == b"JS", "the first quote is never held back"
    # chat and the eval pass the reply's limit: a greedy reply of the batch engine and of
    # generate_bytes alike keeps its quotes whole
    monkeypatch.setattr(copying, "BEST_FIRST", True)
    guard = copying.copy_guard(prompt, True, room=need - 1)
    assert allowed(guard, first) == b"asu"


JONAS_JOB = NoteBlock("Jonas", "job: baker at the corner bakery", 3)
JONAS_TAGS = NoteBlock("Jonas", "type: #person #friend", 4)
JONAS_HEAD = NoteBlock("Jonas", "Gifts", 5)  # a header alone, beside its child's group
JONAS_GIFT = NoteBlock("Jonas", "Gifts\n  a good pen", 6)


def test_a_page_reply_goes_on_with_the_pages_blocks_while_they_fit(monkeypatch):
    """PAGE_FILL: "tell me about Jonas" is answered with Jonas's telling blocks shown, one
    quote each, up to summary.MAX_ITEMS: the reply may not end while one is left that fits,
    and a further quote is one of them: not another page's, not tags only, not a header
    alone whose group is shown."""
    monkeypatch.setattr(copying, "PAGE_FILL", True)
    shown = [JONAS_HEAD, JONAS_JOB, STARTER, JONAS_TAGS, JONAS_GIFT, JONAS]  # best (Jonas's birthday) last
    prompt = format_chat(chat(shown, PAGE_QUESTION)).encode()
    m = FaithfulCopy.from_prompt(prompt, whole=True)
    first = quote(JONAS) + b"\n"
    assert allowed(m, first) == b"F", "the job and the gift are still to say: no stop tag"
    assert allowed(m, first + OPENING + b"Jonas] ") == b"Gbj", "only Jonas's telling blocks (or the job's value)"
    assert allowed(m, first + OPENING + b"Jonas] Gifts") == b"\n", "the gift's group, not its header alone"
    two = first + quote(JONAS_JOB) + b"\n"
    assert allowed(m, two) == b"F"
    three = two + quote(JONAS_GIFT) + b"\n"
    assert allowed(m, three) == b"asu", "only the tags and the header are left: the reply ends"
    # the job's and the gift's quotes do not fit the reply's room: the reply may end
    tight = FaithfulCopy.from_prompt(prompt, room=len(first) + len(quote(JONAS_GIFT)))
    assert allowed(tight, first) == b"asu"
    # at MAX_ITEMS quotes the reply may end, whatever is left
    monkeypatch.setattr(copying, "MAX_ITEMS", 1)
    assert allowed(FaithfulCopy.from_prompt(prompt), first) == b"Fasu"
    # a question for one fact gets its one quote
    fact = format_chat(chat(shown, "when is Jonas's birthday?")).encode()
    assert allowed(FaithfulCopy.from_prompt(fact), first) == b"asu"
    monkeypatch.setattr(copying, "PAGE_FILL", False)
    assert allowed(FaithfulCopy.from_prompt(prompt), first) == b"Fasu", "off: the model chooses"
    assert allowed(FaithfulCopy.from_prompt(prompt), first + OPENING) == b"JS"


def test_a_page_reply_skips_a_long_header_whose_group_says_it_clipped(monkeypatch):
    """A long header's children are grouped under it clipped with an ellipsis (blocks._clip);
    the header alone beside such a group is no further fact to fill with, the group is."""
    monkeypatch.setattr(copying, "PAGE_FILL", True)
    head = NoteBlock("Jonas", "Runs with me. Sundays at nine, rain or shine", 7)
    group = NoteBlock("Jonas", "Runs with me. Sunda…\n  long runs from the park", 8)
    prompt = format_chat(chat([head, group, JONAS], PAGE_QUESTION)).encode()
    m = FaithfulCopy.from_prompt(prompt, whole=True)
    first = quote(JONAS) + b"\n"
    assert allowed(m, first) == b"F", "the group is still to say"
    assert allowed(m, first + OPENING + b"Jonas] Runs with me. Sunda") == b"\xe2", "only the group's clipped head"
    assert allowed(m, first + quote(group) + b"\n") == b"asu", "the header alone is not filled with"


@pytest.mark.parametrize(
    ("question", "several"),
    [
        ("tell me about Jonas", True),
        ("What did I write about jonas?", True),
        ("when is Jonas's birthday?", False),  # one fact: one quote
        ("when is Jonas?", False),  # only the page named, but a date asked (answer_kinds), as search reads it
        ("how do I feed the starter?", False),
    ],
)
def test_only_a_question_about_the_whole_page_may_quote_several_blocks(monkeypatch, question, several):
    """ONE_FACT_ONE_QUOTE: after a whole quote another block's may follow only where the
    question names nothing but the page (query.names_page)."""
    monkeypatch.setattr(copying, "PAGE_FILL", False)
    first = "From [Jonas] birthday: 14 February\n"
    prompt = format_chat(chat([JONAS, STARTER], question)).encode()
    assert allowed(FaithfulCopy.from_prompt(prompt), first) == (b"Fasu" if several else b"asu")
    monkeypatch.setattr(copying, "ONE_FACT_ONE_QUOTE", False)
    assert allowed(FaithfulCopy.from_prompt(prompt), first) == b"Fasu", "off: the model chooses"


def test_best_first_the_first_quote_is_retrievals_best_then_any_other(monkeypatch):
    """BEST_FIRST: a reply's first quote is of the block placed last (retrieval's best,
    where training puts the answering block); after it another shown block may follow."""
    prompt = format_chat(chat([JONAS, STARTER])).encode()
    assert allowed(machine([JONAS, STARTER]), "From [") == b"JS"  # off: the model chooses
    m = FaithfulCopy.from_prompt(prompt, best_first=True)
    assert allowed(m, "From [") == b"J"  # not the Sourdough Starter, shown above Jonas
    assert allowed(m, "From [Jonas] birthday: 14 February\nFrom [") == b"S"
    monkeypatch.setattr(copying, "BEST_FIRST", True)
    assert allowed(copying.copy_guard(prompt, True), "From [") == b"J"  # chat's and the eval's machine


def test_framed_quotes_keep_the_primers_opening_to_a_shown_block():
    """FRAMED_QUOTES: a reply opened as the primer opens its answers ("On your X page: ")
    goes on as a whole quote of a shown block in that frame; off, it is left free."""
    prompt = format_chat(chat([JONAS, STARTER])).encode()
    m = FaithfulCopy.from_prompt(prompt, whole=True, framed=True)
    assert allowed(m, "On your ") == b"JSp"  # "Jonas page: ", "Sourdough Starter page: ", "page on ..."
    assert allowed(m, "On your page on Jonas: birthday: 14 Februar") == b"y"
    assert allowed(m, "On your Jonas page: birthday: 14 February") == b"\n"  # whole: it may end, a tag follows
    assert allowed(m, "On your Jonas page: birthday: 14 February\nFrom [") == b"S"  # then another block
    assert allowed(m, "Your notes") is None  # another opening stays free
    assert allowed(FaithfulCopy.from_prompt(prompt, whole=True), "On your ") is None


def test_a_quote_that_another_extends_may_end_or_go_on():
    m = machine([JONAS_LONG, JONAS])
    assert allowed(m, "From [Jonas] birthday: 14 February") == b"\n,"


def test_no_notes_no_constraint():
    assert machine(None) is None
    assert machine([]) is None  # "Notes: none found."
    assert machine(None, system="Be brief.") is None
    assert FaithfulCopy.from_prompt(b"not a chat at all") is None
    assert FaithfulCopy.from_prompt(b"\xff\xfe") is None


def test_a_persons_system_prompt_is_not_taken_for_notes():
    system = "Notes:\n[Fake] quote me\nBe brief."
    m = machine([JONAS], system=system)
    assert m.quotes == quotes(JONAS)
    assert allowed(m, "From [") == b"J"


def test_notes_cut_by_the_prompt_budget_are_quoted_as_shown():
    """crop_messages may cut the system turn's end: a cut entry is quoted as far as it is
    shown, and one cut inside its page name is no quote at all (nor part of the one above)."""
    content = notes_system_content(render_notes([STARTER, JONAS]))
    for cut, shown in (
        (len("Notes:\n[Jonas] birthday: 14 February\n[Sourdo"), quotes(JONAS)),
        (
            len("Notes:\n[Jonas] birthday: 14 February\n[Sourdough Starter] Feeding\n  Ra"),
            [*quotes(JONAS), b"From [Sourdough Starter] Feeding\n  Ra"],
        ),
        (len("Notes:\n[Jonas] birthday: 14"), [b"From [Jonas] birthday: 14", b"From [Jonas] 14"]),
    ):
        messages = [{"role": "system", "content": content[:cut]}, {"role": "user", "content": "hi"}]
        assert FaithfulCopy.from_messages(messages).quotes == shown


# Page names and block texts as the notes layout allows them: a one-line head, then
# child lines indented by two spaces.
_WORDS = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=1, max_size=20)
_HEAD = _WORDS.filter(lambda s: s.strip() == s and not s.startswith("["))
_BLOCK = st.builds(
    lambda page, head, children, pos: NoteBlock(page, "\n".join([head, *("  " + c for c in children)]), pos),
    _HEAD.filter(lambda s: "]" not in s),
    _HEAD,
    st.lists(_HEAD, max_size=3),
    st.integers(0, 9),
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_BLOCK, min_size=1, max_size=4), st.none() | _WORDS, st.randoms(use_true_random=False))
def test_every_walk_through_the_machine_is_a_faithful_quote(blocks, system, rnd):
    """Any choice of allowed bytes, from "From [" until a stop tag, gives a reply that is
    a prefix of a shown quote (at least up to its page name), and every shown quote can be
    written whole and ended."""
    messages = chat(blocks, system=system)
    assert shown_entries(messages) == [b.render() for b in reversed(blocks)]
    m = FaithfulCopy.from_prompt(format_chat(messages).encode())
    shown = [q for b in blocks for q in quotes(b)]
    reply = bytearray(OPENING)
    for _ in range(400):
        options = m.allowed(reply)
        assert options, bytes(reply)
        reply.append(rnd.choice(options))
        if reply.endswith(TAGS):
            break
    assert reply.endswith(TAGS)
    said = extract_assistant_reply(reply.decode("utf-8")).encode()
    parts = said.split(b"\n" + OPENING)  # one quote, or a page's several, one per line
    for part in [parts[0], *(OPENING + p for p in parts[1:])]:
        assert any(q.startswith(part) and len(part) >= q.index(b"] ") + 1 for q in shown), (part, shown)
    for q in shown:  # each whole quote, then a tag, is a path the machine allows
        path = q + TAGS[rnd.randrange(len(TAGS))]
        for i in range(len(OPENING), len(path)):
            assert path[i] in m.allowed(path[:i]), (path, i)


# ---------------------------------------------------------------- replies


def random_model(seed: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(model_config(n_layer=2, n_head=2, n_embd=32, block_size=512)).eval()


def steer(model: GPT, wanted: bytes, weight: float = 40.0):
    """Make a random model want to write `wanted` (a forward hook lifts its next byte's
    score): it starts its reply "From [" and goes on to misquote. Its own scores decide
    once `wanted` is written, or where the constraint forbids the wanted byte."""
    count = [0]

    def hook(module, args, output):
        log_probs, loss = output
        if args[0].shape[1] > 1:  # a prefill: the reply starts
            count[0] = 0
        else:
            count[0] += 1
        if count[0] < len(wanted):
            log_probs = log_probs.clone()
            log_probs[:, -1, wanted[count[0]]] += weight
        return log_probs, loss

    return model.register_forward_hook(hook)


def reply_of(model: GPT, messages, sampling: SamplingConfig, seed: int = 0, answer_style: str | None = None) -> bytes:
    prompt = format_chat(messages).encode()
    return bytes(generate_bytes(model, prompt, sampling, make_generator(seed), STOP_TAGS, answer_style=answer_style))


GREEDY = SamplingConfig(temperature=0.0, max_new_bytes=120)
FAITHFUL = dataclasses.replace(GREEDY, faithful=True)
MISQUOTES = st.sampled_from(
    [
        b"From [Jonas] birthday: 15 March",
        b"From [Jonas] birthday: 14 February and notices and notices",
        b"From [Sourdough Starter] Feeding ratio 1:2:2",
        b"From [Sourdough Starter] Feeding\n  Ratio 1:1:1 by weight\n  the night before\n  and after",
        b"From [Jonathan] born 1990",
        b"From [[Jonas]] birthday",
        b"From [",
    ]
)


@settings(max_examples=25, deadline=None)
@given(MISQUOTES, st.integers(0, 3), st.permutations([JONAS, STARTER, JONAS_LONG]), st.integers(1, 3))
def test_a_random_models_greedy_quote_is_always_a_prefix_of_a_shown_quote(wanted, seed, blocks, k):
    shown = blocks[:k]
    messages = chat(shown)
    model = random_model(seed)
    handle = steer(model, wanted)
    try:
        free = reply_of(model, messages, GREEDY)
        kept = reply_of(model, messages, FAITHFUL)
    finally:
        handle.remove()
    assert free.startswith(wanted)  # unconstrained, it misquotes as steered
    reply = extract_assistant_reply(kept.decode("utf-8", errors="replace")).encode()
    if len(kept) == GREEDY.max_new_bytes:  # the limit may cut a next quote it had begun
        cut = reply.rfind(b"\n")  # (a stop tag it cut, extract_assistant_reply drops)
        if cut >= 0 and (b"\n" + OPENING).startswith(reply[cut:]):
            reply = reply[:cut]
    assert reply.startswith(OPENING)
    *whole, last = reply.split(b"\n" + OPENING)  # a page's blocks may follow, each quoted whole
    said = [q for b in shown for q in quotes(b)]  # a block's quote, or an attribute's value quoted
    assert all((OPENING if i else b"") + part in said for i, part in enumerate(whole)), reply
    last = OPENING + last if whole else last
    assert any(q.startswith(last) for q in said), (reply, said)
    assert len(kept) == 120 or kept.endswith(TAGS)
    if kept.endswith(TAGS) and copying.WHOLE_QUOTES:  # it ended where a quote is whole
        assert last in said, (reply, said)


def test_the_constraint_changes_a_misquote_the_model_would_write():
    """The test above can fail: without the switch the steered reply is unfaithful."""
    model = random_model(0)
    handle = steer(model, b"From [Jonas] birthday: 15 March")
    try:
        free = extract_assistant_reply(reply_of(model, chat([JONAS, STARTER]), GREEDY).decode(errors="replace"))
        kept = extract_assistant_reply(reply_of(model, chat([JONAS, STARTER]), FAITHFUL).decode(errors="replace"))
    finally:
        handle.remove()
    assert not quote(JONAS).startswith(free.encode())
    assert quote(JONAS).startswith(kept.encode()) and kept.startswith("From [Jonas] birthday: 1")


@pytest.mark.parametrize("switch", ["OWN_WORDS", "NOTES_OWN_WORDS"])
def test_without_own_words_where_notes_are_shown_a_reply_that_is_not_a_quote_is_left_alone(monkeypatch, switch):
    """Where notes are shown and own words are off, abstention, small talk and answers in
    other words decode exactly as with the switch off."""
    monkeypatch.setattr(copying, switch, False)
    for wanted in (b"I couldn't find that in your notes.", b"Hi! What do you need?", b"Fro"):
        for seed in range(3):
            model = random_model(seed)
            handle = steer(model, wanted)
            try:
                assert reply_of(model, chat([JONAS, STARTER]), FAITHFUL) == reply_of(
                    model, chat([JONAS, STARTER]), GREEDY
                )
            finally:
                handle.remove()


@pytest.mark.parametrize("notes", [None, []])
@pytest.mark.parametrize(
    "wanted, starts",
    [
        (b"Hi! What can I tomato page them.", b"Hi! What can I "),  # word salad: kept to a sentence of its own
        (b"I couldn't find that in your notes.", b"I couldn't find that in your notes."),  # and then it stops
        (b"Good night! See you tomorrow.", b"Good night! See you tomorrow."),
    ],
)
def test_own_words_keep_a_reply_that_is_not_a_quote_to_the_bots_sentences(notes, wanted, starts):
    """Faithful decoding (OWN_WORDS, shipped): where no notes are shown, a reply is one of
    the sentences training teaches (own_sentences), whole; the model picks which."""
    assert copying.OWN_WORDS
    sentences = set(copying.own_sentences())
    # Small talk where retrieval found nothing (a question that found nothing: below).
    messages = chat(notes) if notes is None else chat(notes, "many thanks, that helps")
    for seed in range(2):
        model = random_model(seed)
        handle = steer(model, wanted)
        try:
            free = reply_of(model, messages, GREEDY)
            kept = extract_assistant_reply(reply_of(model, messages, FAITHFUL).decode()).encode()
        finally:
            handle.remove()
        assert free.startswith(wanted) and free != wanted  # unconstrained it says the salad, or runs on
        assert kept.startswith(starts) and kept in sentences, kept


def test_own_sentences_hold_every_reply_training_teaches_that_is_not_a_quote(monkeypatch):
    """So faithful decoding never forbids what the model was taught (with the shipped
    quote answers: span answers' sentence frames are not among them, docs/chat.md): the
    grounded stage's abstentions, small talk and conversations' closers, and the primer's
    replies without notes."""
    from bytechat.notes.dialogues import conversation
    from tests.test_grounded import PAGES, make

    monkeypatch.setattr(grounded, "ANSWERS", "quote")
    sentences = set(copying.own_sentences())
    blocks = all_blocks(PAGES)
    index = NotesIndex.build(blocks)
    talks = conversation.Conversations(blocks, lambda q, k: [h.block for h in index.search(q, k)], 3, 512)
    dialogues = [*make(PAGES, seed=3, n=300), *conversation.make(talks, random.Random(2), 200)]
    said = {d.messages[-1]["content"] for d in dialogues}
    said |= {t.reply for t in (everyday.talk(random.Random(i)) for i in range(300))}
    others = {r for r in said if not r.startswith(grounded.ANSWER_PREFIX + "[")}
    assert len(others) > 30 and {grounded.ABSTAIN} < others
    assert {r for r in others if r.encode() not in sentences} == set()
    primer = [m["content"] for d in load_primer(paths.primer_file()) for m in d if m["role"] == "assistant"]
    assert sentences >= {escape_content(primer[2]).encode()}  # "Hi! I can search your notes, ..." (no notes)
    assert escape_content(primer[0]).encode() not in sentences  # a summary of the primer's own notes


@pytest.mark.parametrize("sampling", [GREEDY, SamplingConfig(temperature=0.8, max_new_bytes=80)])
def test_the_switch_off_never_consults_the_machine(monkeypatch, sampling):
    def boom(*args, **kwargs):
        raise AssertionError("FaithfulCopy used with faithful=False")

    monkeypatch.setattr(copying.FaithfulCopy, "allowed", boom)
    monkeypatch.setattr(copying.FaithfulCopy, "from_prompt", boom)
    model = random_model(1)
    handle = steer(model, b"From [Jonas] birthday: 15 March")
    try:
        assert reply_of(model, chat([JONAS]), sampling, seed=3).startswith(b"From [Jonas] birthday: 15 March")
    finally:
        handle.remove()
    assert SamplingConfig().faithful is False


def test_no_notes_shown_nothing_is_quoted(monkeypatch):
    """Without notes a reply cannot start a quote: it is one of the bot's own sentences
    (with OWN_WORDS off, decoding is as with the switch off)."""
    model = random_model(2)
    handle = steer(model, b"From [Jonas] birthday: 15 March")
    try:
        for blocks in (None, []):
            kept = extract_assistant_reply(reply_of(model, chat(blocks), FAITHFUL).decode()).encode()
            assert kept in copying.own_sentences() and not kept.startswith(OPENING), kept
        monkeypatch.setattr(copying, "OWN_WORDS", False)
        for blocks in (None, []):
            assert reply_of(model, chat(blocks), FAITHFUL) == reply_of(model, chat(blocks), GREEDY)
    finally:
        handle.remove()


def test_notes_shown_a_reply_that_opens_no_quote_is_one_of_the_bots_sentences(monkeypatch):
    """With notes in the prompt a reply is a quote or, as without notes, one of the bot's
    own sentences: free, it ran into salad. Free again with NOTES_OWN_WORDS off, and for
    a model taught span answers, whose answers are sentences of its own making (without
    SPAN_FRAMES, which keeps those to its frames)."""
    prompt = format_chat(chat([JONAS, STARTER])).encode()
    m = FaithfulCopy.from_prompt(prompt, own_words=True, notes_own_words=True)
    assert allowed(m, "") == b"FI", "a question shown notes: a quote, or the abstention"
    assert allowed(m, "I couldn't find that in your notes.") == b"\n"
    assert allowed(m, "Fr") == b"o" and allowed(m, "From [") == b"JS"
    talk = format_chat(chat([JONAS, STARTER], "many thanks, that helps")).encode()  # small talk shown notes
    everything = FaithfulCopy.from_prompt(talk, own_words=True, notes_own_words=True)
    assert {ord("F"), ord("O"), ord("I"), ord("G")} <= set(allowed(everything, "")), "any of its sentences"
    monkeypatch.setattr(copying, "QUESTIONS_QUOTE_OR_ABSTAIN", False)
    m = FaithfulCopy.from_prompt(prompt, own_words=True, notes_own_words=True)
    assert {ord("F"), ord("O"), ord("I")} <= set(allowed(m, "")), "off: a quote, framed or not, or its own sentence"
    assert allowed(m, "Sure. Want to record") is None  # no sentence of its own, no quote: left
    assert copying.copy_guard(prompt, True).sentences
    monkeypatch.setattr(copying, "SPAN_FRAMES", False)  # (with it: tests/test_span_frames.py)
    assert not copying.copy_guard(prompt, True, "span").sentences
    model = random_model(4)
    handle = steer(model, b"Sure. Want to record in your notes.")
    try:
        kept = extract_assistant_reply(reply_of(model, chat([JONAS, STARTER]), FAITHFUL).decode()).encode()
        assert kept in copying.own_sentences() or kept.startswith(OPENING), kept
        span = reply_of(model, chat([JONAS, STARTER]), FAITHFUL, answer_style="span")
        monkeypatch.setattr(copying, "NOTES_OWN_WORDS", False)
        free = reply_of(model, chat([JONAS, STARTER]), FAITHFUL)
        assert free.startswith(b"Sure. Want to record in your notes.") and span == free, (free, span)
    finally:
        handle.remove()


def test_a_question_shown_notes_abstains_only_when_the_model_is_sure():
    """Where a question is shown notes, the abstention's first byte loses ABSTAIN_MARGIN
    nats against the quote's: a model that prefers "I couldn't find ..." by less quotes,
    by more it abstains. Small talk shown notes keeps its sentences level, and nothing is
    lowered once the reply has begun."""
    m = FaithfulCopy.from_prompt(format_chat(chat([JONAS, STARTER])).encode(), own_words=True, notes_own_words=True)
    assert m.lowered(b"") == [ord("I")] and m.lowered(b"F") == []
    talk = format_chat(chat([JONAS, STARTER], "many thanks, that helps")).encode()
    assert FaithfulCopy.from_prompt(talk, own_words=True, notes_own_words=True).lowered(b"") == []
    banned, allowed_bytes, lowered, margin = copying.restrict(m, RepeatGuard(16), bytearray())
    assert lowered == [ord("I")] and margin == copying.ABSTAIN_MARGIN > 0
    for lead, expected in ((margin - 0.5, "F"), (margin + 0.5, "I")):
        scores = torch.full((1, 256), -30.0)
        scores[0, ord("F")], scores[0, ord("I")] = -1.0, -1.0 + lead
        byte = sample_rows(scores, [Draw(GREEDY, make_generator(0), banned, allowed_bytes, lowered, margin)])[0]
        assert chr(byte) == expected, lead
    model = random_model(6)
    handle = steer(model, grounded.ABSTAIN.encode())  # a model sure of abstaining still does
    try:
        reply = extract_assistant_reply(reply_of(model, chat([JONAS, STARTER]), FAITHFUL).decode())
        assert reply == grounded.ABSTAIN, reply
    finally:
        handle.remove()


def test_a_question_retrieval_found_nothing_for_abstains_or_refuses(monkeypatch):
    """ "Notes: none found." for a question: the reply is the abstention or a refusal, as
    training answers such a question, not any other of the bot's sentences; small talk or
    a message that asks nothing that found nothing, and a prompt that sent no notes at
    all, keep every sentence."""
    nothing = copying.none_found_sentences()
    assert grounded.ABSTAIN.encode() in nothing and len(nothing) > 1
    other = next(s for s in copying.own_sentences() if s not in nothing and not s.startswith(b"I"))
    for blocks, question, kept in (
        ([], "when is Jonas's birthday?", nothing),  # searched, found nothing
        ([], "many thanks, that helps", copying.own_sentences()),  # small talk: any sentence
        ([], "later, gotta run", copying.own_sentences()),  # asks nothing (intent.reads_as_question)
        (None, "when is Jonas's birthday?", copying.own_sentences()),  # notes never searched
    ):
        m = FaithfulCopy.from_prompt(format_chat(chat(blocks, question)).encode(), own_words=True)
        assert set(allowed(m, "")) == {s[0] for s in kept}, (blocks, question)
    model = random_model(5)
    handle = steer(model, other)
    try:
        reply = extract_assistant_reply(reply_of(model, chat([]), FAITHFUL).decode()).encode()
        assert reply in nothing, reply
        monkeypatch.setattr(copying, "NONE_FOUND_ABSTAINS", False)
        free = extract_assistant_reply(reply_of(model, chat([]), FAITHFUL).decode()).encode()
        assert free == other, free  # off: the model's own choice of sentence
    finally:
        handle.remove()


def test_a_sampled_faithful_reply_is_a_quote_too():
    model = random_model(3)
    shown = [JONAS, STARTER, JONAS_LONG]
    handle = steer(model, b"From [", weight=60.0)
    try:
        for seed in range(8):
            sampled = SamplingConfig(temperature=1.5, top_k=None, top_p=None, max_new_bytes=150, faithful=True)
            raw = reply_of(model, chat(shown), sampled, seed=seed)
            reply = extract_assistant_reply(raw.decode("utf-8", errors="replace")).encode()
            said = [q for b in shown for q in quotes(b)]
            first, *more = reply.split(b"\n" + OPENING)  # a page's blocks may follow, one per line
            parts = [first, *(OPENING + part for part in more)]
            assert all(part in said for part in parts[:-1]), reply
            assert any(q.startswith(parts[-1]) for q in said), reply
    finally:
        handle.remove()


def test_the_faithful_setting_is_checked():
    with pytest.raises(ValueError, match="sampling.faithful"):
        SamplingConfig(faithful="yes")


# ---------------------------------------------------------------- through the engines


def misquoting_model() -> GPT:
    """A tiny model trained (~2 s) to answer a question about Jonas with a wrong quote."""
    torch.manual_seed(0)
    model = GPT(model_config(block_size=128))
    lines = format_chat(chat([STARTER, JONAS])) + "From [Jonas] birthday: 15 March\nuser: thanks\nassistant: ok\n\n"
    return overfit(model, lines * 30, 200)


@pytest.fixture(scope="module")
def engine() -> ChatEngine:
    return ChatEngine(misquoting_model(), info={"path": "test"})


def test_chat_engine_quotes_faithfully_only_with_the_switch(engine):
    messages = chat([STARTER, JONAS])
    free = engine.reply(messages, GREEDY, seed=0).reply
    assert free.startswith("From [Jonas] birthday: 1") and not quote(JONAS).startswith(free.encode())
    kept = engine.reply(messages, FAITHFUL, seed=0)
    assert kept.finish_reason == "stop"
    assert kept.reply.startswith("From [Jonas] birthday: 1") and quote(JONAS).startswith(kept.reply.encode())


def test_the_batch_engine_decodes_faithful_replies_as_decoding_alone(engine):
    rnd = random.Random(0)
    requests = []
    for i in range(6):
        shown = rnd.sample([JONAS, STARTER, JONAS_LONG], rnd.randint(1, 3))
        sampling = FAITHFUL if i % 3 else SamplingConfig(temperature=0.9, max_new_bytes=90, faithful=i % 2 == 0)
        requests.append((chat(shown), sampling, i))
    batch = BatchEngine(engine, max_batch_size=4)
    sinks = [[] for _ in requests]
    for (messages, sampling, seed), sink in zip(requests, sinks):
        batch.submit(messages, sampling, seed, sink.append)
    steps = 0
    while batch.step():
        steps += 1
        assert steps < 2000
    for (messages, sampling, seed), sink in zip(requests, sinks):
        done = sink[-1]
        assert isinstance(done, ReplyDone)
        assert done.reply == engine.reply(messages, sampling, seed).reply
        if sampling.faithful and done.reply.startswith("From ["):
            shown = [b for b in (JONAS, STARTER, JONAS_LONG) if b.render() in messages[0]["content"]]
            assert any(q.startswith(done.reply.encode()) for b in shown for q in quotes(b)), done.reply


@pytest.mark.parametrize("style", [None, "quote", "span"])
def test_both_engines_decode_as_the_model_was_taught(monkeypatch, style):
    """The engine reads the model's answer style (load_model's info): a span-taught model's
    reply that opens no quote is its own sentence to make, where notes are shown (without
    SPAN_FRAMES, which keeps it to its frames: tests/test_span_frames.py)."""
    monkeypatch.setattr(copying, "SPAN_FRAMES", False)
    model = random_model(4)
    handle = steer(model, b"Sure. Want to record in your notes.")
    try:
        alone = ChatEngine(model, info={"answer_style": style})
        reply = alone.reply(chat([JONAS, STARTER]), FAITHFUL, seed=0).reply
        batched = batched_reply(alone, chat([JONAS, STARTER]), FAITHFUL, 0)
    finally:
        handle.remove()
    assert batched == reply
    assert reply.startswith("Sure. Want to record") == (style == "span"), reply


def batched_reply(engine: ChatEngine, messages, sampling: SamplingConfig, seed: int) -> str:
    """The reply the batch engine gives messages, decoded in a batch of its own."""
    batch, sink = BatchEngine(engine, max_batch_size=2), []
    batch.submit(messages, sampling, seed, sink.append)
    while batch.step():
        pass
    return sink[-1].reply


def test_the_chat_cli_and_the_web_api_carry_the_switch(engine):
    from bytechat.serve.chat_cli import ChatSession, parse_args
    from bytechat.serve.web.chat_request import checked_job, parse_body
    from bytechat.serve.web.settings import ServerSettings

    assert parse_args([]).faithful is copying.SHIPPED is True  # shipped on (docs/chat.md)
    assert parse_args(["--no-faithful"]).faithful is False and parse_args(["--faithful"]).faithful is True
    session = ChatSession(engine, SamplingConfig())
    assert session.command("/faithful on") == ("info", "(faithful = True)") and session.sampling.faithful
    assert session.command("/faithful maybe")[0] == "error" and session.sampling.faithful
    assert session.command("/faithful off") == ("info", "(faithful = False)")
    body = b'{"messages": [{"role": "user", "content": "hi"}]}'
    assert checked_job(parse_body(body), ServerSettings()).sampling.faithful  # shipped on
    off = body.replace(b"]}", b'], "faithful": false}')
    assert not checked_job(parse_body(off), ServerSettings()).sampling.faithful


def test_the_eval_asks_with_the_params_switch():
    import yaml

    from bytechat.core.config import ConfigError, parse_params
    from bytechat.eval import grounded as ge
    from bytechat.notes.index import NotesIndex
    from tests.helpers import REPO

    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert parse_params({**raw, "eval": {"faithful": True}}).eval.faithful is True
    assert parse_params({k: v for k, v in raw.items() if k != "eval"}).eval.faithful is False
    with pytest.raises(ConfigError, match="faithful"):
        parse_params({**raw, "eval": {"faithful": "yes"}})

    engine = RecordingEngine()
    with NotesIndex.build([JONAS, STARTER]) as index:
        ge.ask(engine, index, "when is Jonas's birthday?")
        ge.ask(engine, index, "when is Jonas's birthday?", faithful=True)
    seen = [sampling for _, sampling in engine.calls]
    assert [s.faithful for s in seen] == [False, True] and all(s.greedy for s in seen)


def test_small_talk_gets_a_sentence_of_its_own_act(monkeypatch):
    """SMALL_TALK_ACTS: a message chat sends no notes that reads as thanks
    (bytechat.notes.intent) is answered with a thanks, however the model leans; where
    notes were searched ("Notes: none found."), or with the switch off, any sentence."""
    assert copying.SMALL_TALK_ACTS
    thanks = {escape_content(s).encode() for s in everyday.topic_replies("thanks")}
    wanted = everyday.topic_replies("feeling_low")[0].encode()  # another act's sentence
    assert wanted not in thanks and wanted in copying.own_sentences()

    def kept(messages) -> bytes:
        model = random_model(0)
        handle = steer(model, wanted)
        try:
            return extract_assistant_reply(reply_of(model, messages, FAITHFUL).decode()).encode()
        finally:
            handle.remove()

    said = "many thanks, that helps"
    assert kept(chat(None, said)) in thanks
    assert kept(chat([], said)) == wanted, "notes were searched for it: not judged as small talk"
    monkeypatch.setattr(copying, "SMALL_TALK_ACTS", False)
    assert kept(chat(None, said)) == wanted


def test_a_greeting_s_time_of_day_carries_into_its_reply():
    """As training carries a filler from the prompt into the reply (everyday.talk): a
    good morning is answered with a good morning, not a good evening."""
    replies = copying.own_sentences("greeting_time", "morning!")
    assert replies and all(r.startswith(b"Good morning") for r in replies)
    assert {r[:12] for r in copying.own_sentences("greeting_time")} > {b"Good morning"}, "without the message, any time"

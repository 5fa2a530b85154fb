"""A fact question answered with the span the model's span head points at
(bytechat/serve/span_answer.py), through faithful decoding, alone and batched."""

from __future__ import annotations

import random
import re

import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st

from bytechat.model import GPT
from bytechat.notes.blocks import NoteBlock
from bytechat.notes.grounded import ABSTAIN
from bytechat.notes.answer_kinds import NAME, PLACE, answer_kind, as_typed, span_kind
from bytechat.serve.copying import copy_guard
from bytechat.serve.generate import ChatEngine
from bytechat.serve import span_answer
from bytechat.serve.span_answer import MAX_BYTES, answer_span, best_span
from bytechat.text.chat_format import format_chat
from tests.helpers import model_config
from tests.test_copying import FAITHFUL, STARTER, allowed, batched_reply, chat, steer

JOKE = NoteBlock("Jonas", "birthday: 14 February. Yes, really, a table nowhere", 5)


def head_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(model_config(n_layer=2, n_head=2, n_embd=32, block_size=512, span_dim=16, span_weight=0.03)).eval()


def prompt(blocks, question: str = "when is Jonas's birthday?") -> bytes:
    return format_chat(chat(blocks, question)).encode()


def spans_as_answers_are(data: bytes, lo: int) -> list[tuple[int, int]]:
    """Every span an answer may be: within the range, one line, whole words, no space at either end."""

    def word(c):
        return chr(c).isalnum() or c >= 0x80

    def fine(i, j):
        edges = (i == 0 or not (word(data[i - 1]) and word(data[i]))) and (
            j + 1 == len(data) or not (word(data[j]) and word(data[j + 1]))
        )
        piece = data[i : j + 1]
        return j - i < MAX_BYTES and b"\n" not in piece and edges and piece.strip() == piece

    return [(i, j) for i in range(lo, len(data)) for j in range(i, len(data)) if fine(i, j)]


def scores(data: bytes, seed: int) -> tuple[list[float], list[float]]:
    rnd = random.Random(seed)
    return [rnd.gauss(0, 1) for _ in data], [rnd.gauss(0, 1) for _ in data]


@settings(max_examples=60, deadline=None)
@given(text=st.text(alphabet="ab 1\n,é", min_size=1, max_size=200), seed=st.integers(0, 1000))
def test_the_best_span_is_one_line_at_word_edges_and_scores_highest(text, seed):
    data = text.encode()
    begin, end = scores(data, seed)
    lo = random.Random(seed).randrange(len(data))
    found = best_span(data, begin, end, lo, len(data))
    candidates = spans_as_answers_are(data, lo)
    if not candidates:
        assert found is None
        return
    assert found in candidates
    assert begin[found[0]] + end[found[1]] == max(begin[i] + end[j] for i, j in candidates)


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet="ab 1\n,", min_size=1, max_size=120), seed=st.integers(0, 1000))
@example(text="1\n1b", seed=0)  # the kind's text on a later line: no span reaches across to it
def test_a_span_holds_text_of_the_asked_kind_where_the_block_has_some(text, seed):
    """ "how much ...?" is answered with a span that holds an amount where the block says
    one (the best such span); a block that says none is answered as if no kind were asked."""
    kind = re.compile(r"1+ ?b")  # an amount: a number and its unit
    data = text.encode()
    begin, end = scores(data, seed)
    found = best_span(data, begin, end, 0, len(data), kind)
    said = [(m.start(), m.end() - 1) for m in kind.finditer(text)]
    if not said:
        assert found == best_span(data, begin, end, 0, len(data))
        return
    holding = [(i, j) for i, j in spans_as_answers_are(data, 0) if any(i <= s and e <= j for s, e in said)]
    if not holding:
        assert found is None
        return
    assert found in holding
    assert begin[found[0]] + end[found[1]] == max(begin[i] + end[j] for i, j in holding)


def test_a_fact_question_gets_a_span_of_the_best_block_and_other_questions_none():
    model = head_model()
    shown = [JOKE, STARTER]  # best first: the Jonas block is placed last
    span = answer_span(model, prompt(shown))
    assert span and span in JOKE.text and len(span.encode()) <= MAX_BYTES
    assert answer_span(model, prompt(shown, "tell me about Jonas")) is None  # a whole page
    assert answer_span(model, prompt(shown, "who is Jonas?")) is None  # about his page, not for a name
    assert answer_span(model, prompt(shown, "who brought Jonas?")) is None  # the block names no one: quoted whole
    assert answer_span(model, prompt(shown, "when did Jonas say 'really'?")) is not None  # it says a date
    assert answer_span(model, prompt(shown, "how do I feed the starter")) is None  # asks no kind of answer
    assert answer_span(model, prompt(None, "when is Jonas's birthday?")) is None  # no notes shown
    assert answer_span(GPT(model_config(block_size=512)).eval(), prompt(shown)) is None  # no span head


def test_a_span_stays_in_one_sentence():
    """ONE_SENTENCE: "14 February. Yes, really, a table nowhere" answers with its first
    sentence however far the head would run on."""
    text = JOKE.text.encode()
    begin, end = scores(text, 2)
    end[len(text) - 1] = 50.0  # the head prefers the line's end
    first, last = best_span(text, begin, end, 0, len(text), answer_kind("when is Jonas's birthday?"))
    assert b"14 February" in text[first : last + 1] and b"Yes" not in text[first : last + 1]
    later = b"[Ana] met for coffee. Back on 3 May"  # the kind's text in a later sentence
    begin, end = scores(later, 2)
    begin[later.index(b"met")] = end[len(later) - 1] = 50.0
    first, last = best_span(later, begin, end, 6, len(later), answer_kind("when is Ana back?"))
    assert b"May" in later[first : last + 1] and b"coffee" not in later[first : last + 1]


def test_an_answer_for_a_quantity_starts_where_the_block_says_one():
    """QUANTITY_STARTS: "how long do I toast the rice?" gets "2 minutes", not the line
    from "Toast", whatever the head prefers; a range starts at its first end ("8 to 10
    days"); a question for no quantity, or a block that says none, is the head's alone."""
    text = b"[Risotto] Toast the rice in the oil for 2 minutes, stirring"
    begin, end = scores(text, 4)
    begin[text.index(b"Toast")] = 50.0
    first, last = best_span(text, begin, end, 10, len(text), answer_kind("how long do I toast the rice?"))
    assert text[first:].startswith(b"2 minutes"), text[first : last + 1]
    brew = b"[Kombucha] First ferment: 8 to 10 days, then bottle"
    begin, end = scores(brew, 4)
    begin[brew.index(b"First")] = 50.0
    first, last = best_span(brew, begin, end, 11, len(brew), answer_kind("how long is the first ferment?"))
    assert brew[first:].startswith(b"8 to 10 days"), brew[first : last + 1]
    begin, end = scores(text, 4)
    begin[text.index(b"Toast")] = 50.0
    first, last = best_span(text, begin, end, 10, len(text), answer_kind("when do I toast the rice?"))
    assert text[first:].startswith(b"Toast")  # a date: the block says none, the head starts it
    pie = "[Fish Pie] Bake at 200 \u00b0C for 30 minutes".encode()  # a temperature starts at its number
    begin, end = scores(pie, 4)
    begin[pie.index(b"Bake")] = 50.0
    first, last = best_span(pie, begin, end, 11, len(pie), answer_kind("what oven temp for the fish pie?"))
    assert pie[first:].startswith("200 \u00b0C".encode()), pie[first : last + 1]
    plain = b"[Risotto] Toast the rice briefly"
    assert best_span(plain, *scores(plain, 4), 10, len(plain), answer_kind("how long do I toast it?")) is not None


def test_a_quantity_is_said_whole(monkeypatch):
    """WHOLE_QUANTITIES: where the head would stop after "1 hour", the span says "1 hour 10
    minutes"; after "€96", it says the rate, "€96 a night"."""
    bake = b"[Barmbrack] Bake at 160 \xc2\xb0C fan for 1 hour 10 minutes"
    stay = "[Bled] Penzion Lipa, lake-view room, \u20ac96 a night".encode()
    cases = (
        (bake, "how long does it bake?", b"1 hour", b"1 hour 10 minutes"),
        (stay, "how much is it?", "\u20ac96".encode(), "\u20ac96 a night".encode()),
    )
    for text, question, short, whole in cases:
        page = text.index(b"] ") + 2
        begin, end = scores(text, 5)
        begin[text.index(short)] = 50.0
        end[text.index(short) + len(short) - 1] = 50.0  # the head prefers to stop short
        first, last = best_span(text, begin, end, page, len(text), answer_kind(question))
        assert text[first : last + 1] == whole, text[first : last + 1]
        monkeypatch.setattr(span_answer, "WHOLE_QUANTITIES", False)
        first, last = best_span(text, begin, end, page, len(text), answer_kind(question))
        assert text[first : last + 1] == short
        monkeypatch.undo()


def test_a_todo_question_gets_the_task_whole(monkeypatch):
    """WHOLE_TASKS: whatever part of a TODO line the head points at, the answer is its task."""
    trip = NoteBlock("Copenhagen Trip", "TODO buy a 72-hour Copenhagen Card\nTODO book seats on the train", 3)
    asked = prompt([trip, STARTER], "what do I still have to buy for Copenhagen?")  # best first

    def partial(text, begin, end, lo, hi, kind=None, topic=(), counted=None):  # the head stops before "Card"
        at = text.index(b"buy a 72-hour")
        return at, at + len(b"buy a 72-hour Copenhagen") - 1

    monkeypatch.setattr(span_answer, "best_span", partial)
    assert answer_span(head_model(), asked) == "buy a 72-hour Copenhagen Card"
    monkeypatch.setattr(span_answer, "WHOLE_TASKS", False)
    assert answer_span(head_model(), asked) == "buy a 72-hour Copenhagen"


def test_a_hyphen_between_letters_joins_one_word():
    """ "buy a 72-hour Copenhagen Card": no span ends at "72" nor starts at "hour"."""
    text = b"[Trip] TODO buy a 72-hour card"
    begin, end = scores(text, 1)
    begin[text.index(b"hour")] = end[text.index(b"72") + 1] = 50.0  # the head would cut the word
    first, last = best_span(text, begin, end, len(b"[Trip] "), len(text))
    piece = text[first : last + 1]
    assert not piece.endswith(b"72") and not piece.startswith(b"hour"), piece
    dash = b"[Trip] packed -light"  # a hyphen with a space beside it joins nothing
    begin, end = scores(dash, 1)
    begin[dash.index(b"light")] = end[dash.index(b"light") + 4] = 50.0
    first, last = best_span(dash, begin, end, 7, len(dash))
    assert dash[first : last + 1] == b"light"


def test_a_who_question_gets_a_span_that_names_someone_where_the_block_does(monkeypatch):
    """answer_kinds.span_kind: "who" asks for a name (answer_kinds.NAME); whatever the head scores, the
    span is one of the block's names where it says one (a name has its own edges: the
    head chooses which), and any span answers where it says none."""
    text = b"[Kombucha] The SCOBY came from Lena, started on 2 October."
    begin, end = scores(text, 3)
    begin[text.index(b"started")] = end[text.index(b"October") + len(b"October") - 1] = (
        50.0  # the head prefers the date
    )
    first, last = best_span(text, begin, end, len(b"[Kombucha] "), len(text), span_kind("who gave me the SCOBY?"))
    assert text[first : last + 1] == b"Lena"
    two = b"[Car] Garage: Autohaus Brink, ask for Henk."
    begin, end = scores(two, 3)
    begin[two.index(b"Henk")] = end[two.index(b"Henk") + 3] = 50.0
    first, last = best_span(two, begin, end, len(b"[Car] "), len(two), NAME)
    assert two[first : last + 1] == b"Henk"
    assert span_kind("who waters the plants when I'm away?") is NAME  # "when" opens a clause of it
    assert span_kind("what about the last one, who arranged it?") is NAME  # the topic first, then the question
    songs = b"[Choir] Faure, Cantique de Jean Racine; a folk song that Evert arranged himself"
    begin, end = scores(songs, 3)
    begin[songs.index(b"Jean")] = end[songs.index(b"Racine") + 5] = 50.0  # the head prefers the other name
    first, last = best_span(songs, begin, end, 8, len(songs), NAME, ("arranged",))
    assert songs[first : last + 1] == b"Evert"  # the name the question's topic follows
    begin, end = scores(two, 3)
    begin[two.index(b"Autohaus")] = end[two.index(b"Brink") + 4] = 50.0  # the head prefers the garage
    first, last = best_span(two, begin, end, len(b"[Car] "), len(two), NAME, ("ask", "garage"))
    assert two[first : last + 1] == b"Henk"  # the name the question's topic comes just before (NAMES_AFTER_TOPIC)
    assert span_kind("when did she start?") is not NAME and span_kind("what does Tomasz do?") is None
    plain = b"[Kombucha] the scoby came from a friend"
    assert best_span(plain, *scores(plain, 3), 11, len(plain), NAME) is not None
    monkeypatch.setattr(span_answer, "NAMES_AFTER_TOPIC", False)
    first, last = best_span(two, begin, end, len(b"[Car] "), len(two), NAME, ("ask", "garage"))
    assert two[first : last + 1] == b"Autohaus Brink"


def test_a_quantity_question_gets_one_quantity_whole(monkeypatch):
    """ONE_QUANTITY: whatever the head scores, the answer is one of the block's quantities,
    whole ("€1,400", "160 °C fan"), a bare number with or without what it counts ("6
    nurses", never "4 garlic"), with it where the question counts it (SAY_THE_COUNTED: "how
    many cloves?" is "4 garlic cloves"), and one that says the question's topic where any
    does ("6 nurses" for nursing staff, "€420 for the hotel")."""
    cases = (
        (
            "24 desks for 31 people, so hot-desking on Mondays",
            "how many desks?",
            ("desks",),
            "desks",
            {"24 desks"},
        ),
        ("Team: 4 vets, 6 nurses, head nurse Oskar", "how many nurses?", ("nursing", "staff"), None, {"6", "6 nurses"}),
        ("4 garlic cloves and a thumb of ginger", "how many cloves?", ("clove",), "clove", {"4 garlic cloves"}),
        ("€950 in total, of which €420 for the hotel", "how much?", ("hotel",), None, {"€420"}),
        ("about €1,400 in total, split 3 and 4", "how much is it?", (), None, {"€1,400"}),
        ("Bake at 160 °C fan for 1 hour 10 minutes", "what temperature?", (), None, {"160 °C fan"}),
        ("every second day, but every evening in July", "how often?", ("july",), None, {"every evening"}),
        ("midwife, nights every other week", "how often?", ("nights",), None, {"every other week"}),
    )
    for line, question, topic, counted, answers in cases:
        text = f"[Page] {line}".encode()
        for seed in range(20):
            begin, end = scores(text, seed)
            end[len(text) - 1] = 50.0  # the head would run on to the line's end
            first, last = best_span(text, begin, end, 7, len(text), answer_kind(question), topic, counted)
            assert text[first : last + 1].decode() in answers, (question, text[first : last + 1])
    text = b"[Page] 4 garlic cloves and a thumb of ginger"
    monkeypatch.setattr(span_answer, "SAY_THE_COUNTED", False)
    bare = set()
    for seed in range(20):
        begin, end = scores(text, seed)
        first, last = best_span(text, begin, end, 7, len(text), answer_kind("how many cloves?"), (), "clove")
        bare.add(text[first : last + 1])
    assert b"4" in bare  # without it, the head may say the number bare
    text = b"[Page] 24 desks for 31 people"
    begin, end = scores(text, 0)
    begin[7] = end[len(text) - 1] = 50.0
    monkeypatch.setattr(span_answer, "ONE_QUANTITY", False)
    first, last = best_span(text, begin, end, 7, len(text), answer_kind("how many desks?"))
    assert text[first : last + 1] == b"24 desks for 31 people"  # without it, the head's run-on


def test_a_when_question_gets_one_date_whole(monkeypatch):
    """ONE_DATE: whatever the head scores, a "when" answer is one of the block's dates, said
    whole with its day, year, "of the month", time and bound ("between Christmas and New
    Year": a holiday is a date), days said together as one, never the line around it."""
    cases = (
        ("Dekker Verzekeringen, policy 7731-0042, renews on 1 March", {"1 March"}),
        ("27 kg at the check on 29 January 2027", {"29 January 2027"}),
        ("lessons every second Wednesday at 19:00, €35", {"every second Wednesday at 19:00"}),
        ("Kennemer Imkers, second Saturday of the month", {"second Saturday of the month"}),
        ("TODO order new frames before March", {"before March"}),
        ("the servers move on the weekend of 16 January", {"the weekend of 16 January"}),
        ("24 desks, so hot-desking on Mondays and Fridays", {"Mondays and Fridays"}),
        ("Varroa treatment with oxalic acid between Christmas and New Year", {"between Christmas and New Year"}),
        (
            "trip: 12 to 16 February 2027, or Monday 18 January 2027",
            {"12 to 16 February 2027", "Monday 18 January 2027"},
        ),
    )
    for line, answers in cases:
        text = f"[Page] {line}".encode()
        for seed in range(10):
            begin, end = scores(text, seed)
            begin[7] = end[len(text) - 1] = 50.0  # the head would quote the line
            first, last = best_span(text, begin, end, 7, len(text), answer_kind("when is it?"))
            assert text[first : last + 1].decode() in answers, text[first : last + 1]
    text = b"[Page] 3 February 2027: agreed to trial online booking from 1 March"
    for seed in range(10):  # a start is the date said with "from" (DATE_BOUNDS)
        begin, end = scores(text, seed)
        first, last = best_span(text, begin, end, 7, len(text), answer_kind("when?"), ("starting",))
        assert text[first : last + 1] == b"from 1 March"
    monkeypatch.setattr(span_answer, "DATE_BOUNDS", False)
    picked = set()
    for seed in range(10):
        begin, end = scores(text, seed)
        first, last = best_span(text, begin, end, 7, len(text), answer_kind("when?"), ("starting",))
        picked.add(text[first : last + 1])
    assert b"3 February 2027" in picked  # without it, the head may pick the other date
    monkeypatch.setattr(span_answer, "ONE_DATE", False)
    text = b"[Page] crates arrive on 11 January, 3 per person"
    begin, end = scores(text, 0)
    begin[7] = end[len(text) - 1] = 50.0
    assert best_span(text, begin, end, 7, len(text), answer_kind("when is it?")) == (7, len(text) - 1)


def test_a_mistyped_asking_word_is_read_as_meant():
    """answer_kinds.as_typed: "wen", "wher", "how ofen" ask what "when", "where", "how often"
    ask; a word of its own ("then", "were") and a question's other words stay as typed."""
    assert as_typed("wen do i treat the bees for varoa") == "when do i treat the bees for varoa"
    assert as_typed("wher does marta live") == "where does marta live"  # a letter left out: not "when"
    assert as_typed("how ofen do i water it") == "how often do i water it"
    assert as_typed("then were you there?") == "then were you there?"
    assert span_kind("whn is the trian to bled") is answer_kind("when is the train?")
    assert span_kind("wher does marta live") is PLACE
    model = head_model()
    gus = NoteBlock("Gus", "Feeding\n  fed 1:1:1 with rye\n  kept in the fridge", 2)
    answer = answer_span(model, prompt([gus, STARTER], "wen do I feed the rye?"))
    assert answer == "fed 1:1:1 with rye"  # the block says no date: its line that says the words


def test_a_where_question_gets_a_place_whole():
    """answer_kinds.PLACE: "where" asks for what follows a word of place, up to the word that
    joins or the clause's end, with the places that locate it, never a time; the head
    chooses which place. "where did X come up in my notes?" asks for a note, not a place."""

    def places(text):
        return [m.group("place") for m in PLACE.finditer(text)]

    assert places("Lives in Porto with Rui and their dog.") == ["Porto"]
    assert places("hers hangs on the blue hook by my door.") == ["the blue hook by my door"]
    assert places("Grew up in Gdańsk, moved to Galway in 2019") == ["Gdańsk"]  # a year is no place
    assert places("Lives in Douglas, Cork, with her husband") == ["Douglas, Cork"]
    assert places("we meet on Tuesdays at The Harbour Snug, in the evening") == ["The Harbour Snug"]
    assert span_kind("where does Marta live?") is PLACE and span_kind("who lives where?") is NAME
    assert span_kind("where did decisions come up in my notes?") is None
    text = "[Oskar] Grew up in Gdańsk, moved to Galway in 2019".encode()
    for seed in range(10):
        begin, end = scores(text, seed)
        end[len(text) - 1] = 50.0  # the head would run on
        first, last = best_span(text, begin, end, 8, len(text), PLACE)
        assert text[first : last + 1] == "Gdańsk".encode()
    model = head_model()
    home = NoteBlock("Marta", "Lives in Porto with Rui and their dog Bolacha.", 2)
    assert answer_span(model, prompt([home, STARTER], "where does Marta's dog live?")) == "Porto"
    flat = NoteBlock("Marta", "address\n  Rua das Flores 12\n  second floor, the green door", 2)
    answer = answer_span(model, prompt([flat, STARTER], "where is the green door?"))
    assert answer == "second floor, the green door"  # no place said: the line that says its words


KIDS = NoteBlock("Tomasz", "Kids\n  Zofia (9), plays the cello\n  Kuba (5), obsessed with trams", 4)


def test_with_a_span_the_one_quote_is_the_page_and_the_span():
    m = copy_guard(prompt([JOKE, STARTER]), True, "quote", 200, span="14 February")
    assert allowed(m, "From [") == b"J"  # only the best block's page
    assert allowed(m, "From [Jonas] ") == b"1"  # straight to the span: no key, no other line
    assert allowed(m, "From [Jonas] 14 February") == b"\n"  # whole: the end is forced
    assert allowed(m, "From [Jonas] 14 February\n") == b"asu"  # a stop tag, never a further quote
    assert allowed(m, "I") is not None  # the abstention stays open (by the model's margin)
    without = copy_guard(prompt([JOKE, STARTER]), True, "quote", 200)
    assert allowed(without, "From [Jonas] 14 February") != b"\n"  # the whole value may go on
    # The primer's framed opening ("On your Jonas page: ...") has no quote left to copy:
    # it is no opening, so the reply is never left free (it ran into salad on a new graph)
    assert allowed(without, "On you") == b"r"  # without a span, the frame opens a quote
    assert b"O" not in allowed(m, "") and b"O" in allowed(without, "")


def test_chat_alone_and_batched_answer_with_the_heads_span():
    model = head_model(1)
    handle = steer(model, b"From [Jonas] birthday: 14 February. Yes, really, a table nowhere")
    try:
        engine = ChatEngine(model)
        span = answer_span(model, prompt([JOKE, STARTER]))
        alone = engine.reply(chat([JOKE, STARTER]), FAITHFUL, seed=0).reply
        batched = batched_reply(engine, chat([JOKE, STARTER]), FAITHFUL, 0)
    finally:
        handle.remove()
    assert alone in (f"From [Jonas] {span}", ABSTAIN), alone
    assert batched == alone

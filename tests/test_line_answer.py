"""A fact question that asks no kind of answer, answered with a line, a clause or a value of
the best block (bytechat/serve/line_answer.py), alone and through the span answer."""

from __future__ import annotations

from bytechat.notes.blocks import NoteBlock
from bytechat.serve.line_answer import (
    asked_value,
    best_clause,
    best_line,
    echoed_value,
    line_answer,
    reason,
    what_object,
    which_member,
    which_one,
)
from bytechat.serve.span_answer import answer_span
from tests.test_copying import STARTER
from tests.test_span_answer import KIDS, head_model, prompt


def test_a_yes_no_question_gets_the_clause_that_says_its_words():
    """best_clause: "is breakfast included?" is answered "breakfast included", the clause of
    the line that says its words; a request ("could you check ...?"), a question for a note
    ("is its plan in there too?"), a question that is no yes/no one and a tie get none."""
    hotel = "breakfast included, check-in from 15:00"
    assert best_clause("is breakfast included?", hotel) == "breakfast included"
    crumble = "Rub the butter in with your fingertips, never knead it."
    assert best_clause("should I knead it?", crumble) == "never knead it."
    assert best_clause("could you check the breakfast?", hotel) is None
    assert best_clause("is its breakfast in there too?", hotel) is None
    assert best_clause("what about breakfast?", hotel) is None
    assert best_clause("is it good?", "good, very good") is None  # every clause says it
    model = head_model()
    trip = NoteBlock("Copenhagen Trip", "Hotel Vesterbro Hus, breakfast included, check-in from 15:00", 2)
    assert answer_span(model, prompt([trip, STARTER], "is breakfast included?")) == "breakfast included"


def test_a_question_for_a_key_gets_its_value():
    """asked_value: "what was the status of X?" is answered `finished` of `status: finished`;
    a key's every topic word must be asked ("Why the name" asks "name"); a question for a
    note, a line without a key or a key not asked get none."""
    assert asked_value("what was the status of The Midnight Library again", "status: finished") == "finished"
    why = "Why the name: weather + query. Short to type."
    assert asked_value("any idea what wxq's Why the name is?", why) == "weather + query. Short to type."
    assert asked_value("ok. and its plot", "plot: 14, next to the water tap") == "14, next to the water tap"
    assert asked_value("I noted something about status once, what was it?", "status: finished") is None
    assert asked_value("what was the status?", "finished in July") is None
    assert asked_value("what was the rating?", "status: finished") is None
    model = head_model()
    book = NoteBlock("Books/Piranesi", "rating: 4/5", 2)
    assert answer_span(model, prompt([book, STARTER], "could you check the rating for Piranesi?")) == "4/5"


def test_a_question_that_asks_no_kind_gets_the_line_of_the_block_that_says_its_words():
    """best_line: the line that says more of the question's words (a word form, a typo of
    one) than any other line; the page's title says nothing; a sentence is no line."""
    entry = f"[{KIDS.page}] {KIDS.text}"
    assert best_line("which of Tomasz's kids is the tram fan?", entry) == "Kuba (5), obsessed with trams"
    assert best_line("who plays the chello?", entry) == "Zofia (9), plays the cello"  # a typo of "cello"
    assert best_line("who plays the cllo?", entry) == "Zofia (9), plays the cello"  # a letter left out
    assert best_line("who is obsessing over trams?", entry) == "Kuba (5), obsessed with trams"  # one stem
    assert best_line("what about Tomasz?", entry) is None  # the title's words say nothing
    assert best_line("which of them is older?", entry) is None  # no line says it
    tyres = "[Car] Tyres\n  front tyres: new in May\n  back tyres: worn"
    assert best_line("what about the tyres?", tyres) is None  # every line says it: a tie
    assert best_line("are the back tyres worn?", tyres) == "back tyres: worn"
    club = "[Book Club] Next meeting at Pieter's place. Bring snacks, he has the wine."
    assert best_line("what am I bringing to the next book club?", club) is None  # one line: the note whole
    model = head_model()
    shown = [KIDS, STARTER]  # best first: placed last
    assert answer_span(model, prompt(shown, "which kid loves trams?")) == "Kuba (5), obsessed with trams"
    assert answer_span(model, prompt(shown, "how do I get the kid to love trams?")) is None  # steps: the block
    assert answer_span(model, prompt(shown, "tell me about Tomasz")) is None  # the page


def test_a_value_said_after_the_words_asked_is_the_answer(monkeypatch):
    """echoed_value: "what's the booking reference ...?" is answered `KX7P2M` of "booking ref
    KX7P2M" (two asked words side by side, one of them as the notes shorten it) and "booking
    reference for the hotel?" `HVH-55821`; the value opens with a digit, a capital or a
    currency sign and ends with its clause. A lower-case word after them, one asked word that
    is not the noun asked, or a question for a note get none."""
    back = "back: LJU → DUB on 24 April, departs 17:20, booking ref KX7P2M"
    assert echoed_value("What's the booking reference for the flight home?", back) == "KX7P2M"
    hotel = "Hotel Vesterbro Hus, Istedgade 38, four nights, booking reference HVH-55821"
    assert echoed_value("booking reference for the Copenhagen hotel?", hotel) == "HVH-55821"
    assert echoed_value("Which seat did I get on the flight out?", "out: DUB, arrives 10:35, seat 14A") == "14A"
    assert echoed_value("and the entry fee?", "the Kinvara Bay swim on 24 July, entry fee €45") == "€45"
    assert echoed_value("which pears do I use?", "6 ripe Conference pears, peeled") is None  # nothing after
    assert echoed_value("what nuts is she allergic to?", "allergic to walnuts and pecans") is None  # lower case
    assert echoed_value("when do I depart for Cork?", "depart 17:20") is None  # one word, not the noun asked
    assert echoed_value("is the booking reference written down?", hotel) is None  # the note
    model = head_model()
    trip = NoteBlock("Copenhagen Trip", "Hotel\n  " + hotel, 3)
    assert answer_span(model, prompt([trip, STARTER], "booking reference for the Copenhagen hotel?")) == "HVH-55821"
    monkeypatch.setattr("bytechat.serve.line_answer.ECHOED_VALUES", False)
    assert answer_span(model, prompt([trip, STARTER], "booking reference for the Copenhagen hotel?")) == hotel


def test_which_one_is_said_with_the_word_that_says_which(monkeypatch):
    """which_one: "which pears do I use?" is answered `Conference pears`, "which trees was the
    honey from?" `lime tree`, "what nuts ...?" the compound that is one (`walnuts`); N said
    first, after a number or a joining word, or not at all gets none, and so does a question
    that is no "which N"."""
    assert which_one("which pears do I use?", "6 ripe Conference pears, peeled") == "Conference pears"
    assert which_one("which trees was the honey from?", "14 jars of honey, mostly lime tree") == "lime tree"
    assert which_one("what nuts is Femke allergic to?", "allergic to walnuts and pecans") == "walnuts"
    assert which_one("which books did we love?", "Books we loved: Piranesi") is None  # said first
    assert which_one("which pears do I use?", "6 pears, peeled") is None  # a number says how many
    assert which_one("which pears do I use?", "a few of the pears") is None  # "the" says nothing
    assert which_one("what is the pear for?", "6 ripe Conference pears") is None  # no "which N"
    femke = "[Femke] dark chocolate, the 85% kind"
    assert line_answer("wich chocolate dos femke like", femke) == "dark chocolate"  # asking words as typed
    assert line_answer("which pears do I use?", "[Crumble] 6 ripe Conference pears, peeled") == "Conference pears"
    monkeypatch.setattr("bytechat.serve.line_answer.WHICH_ONE", False)
    assert line_answer("which pears do I use?", "[Crumble] 6 ripe Conference pears, peeled") is None


def test_a_value_that_names_something_is_answered_with_the_name(monkeypatch):
    """APPOSITIONS: `name: Spaarnestem, a mixed choir of about 40 singers` answers "what's the
    name of my choir?" with `Spaarnestem`; a value that goes on otherwise is said whole."""
    choir = "name: Spaarnestem, a mixed choir of about 40 singers"
    assert asked_value("what's the name of my choir?", choir) == "Spaarnestem"
    assert (
        asked_value("what's the address?", "address: Kleine Houtstraat 41, Haarlem") == "Kleine Houtstraat 41, Haarlem"
    )
    assert asked_value("what's my plot?", "plot: 14, next to the water tap") == "14, next to the water tap"
    monkeypatch.setattr("bytechat.serve.line_answer.APPOSITIONS", False)
    assert asked_value("what's the name of my choir?", choir) == choir.split(": ", 1)[1]


def test_a_why_question_gets_the_reason(monkeypatch):
    """reason: "why did I need to call the garage?" is answered `the rattle under the dashboard`
    (what "about" gives), "why fry the mushrooms first?" `they go soggy` (what "or" gives), and
    with no such word the one clause that says none of the question's words; a question that
    is no "why", a text of several lines, or clauses that all say its words get none."""
    todo = "TODO call Autohaus Brink about the rattle under the dashboard, see Car"
    assert reason("why did I need to call the garage?", todo) == "the rattle under the dashboard"
    fry = "Fry the mushrooms hard first and set them aside, or they go soggy."
    assert reason("why should the mushrooms get fried first?", fry) == "they go soggy"
    mint = "Move the mint to its own pot, it takes over everything."
    assert reason("why does the mint need its own pot?", mint) == "it takes over everything"
    assert reason("what should I fry first?", fry) is None
    assert reason("why fry them?", "Fry the mushrooms\n  or they go soggy") is None
    assert reason("why move the mint?", "Move the mint, the mint spreads") is None  # both say it
    assert line_answer("why did I need to call the garage?", "[Log] " + todo) == "the rattle under the dashboard"
    monkeypatch.setattr("bytechat.serve.line_answer.REASONS", False)
    assert line_answer("why did I need to call the garage?", "[Log] " + todo) is None


def test_which_of_them_gets_the_one_the_line_is_about(monkeypatch):
    """which_member: "which of them is afraid of dogs?" is answered `Noor` of "Noor is scared of
    dogs, Sem wants one", "which one has the blue queen?" `Hive 1` of "Hive 1: marked blue";
    a line that opens with no name, or a question that is no "which of / which one", gets none."""
    assert which_member("which of them is afraid of dogs?", "Noor is scared of dogs, Sem wants one") == "Noor"
    assert which_member("and which one has the blue queen?", "Hive 1: marked blue, 2025 queen") == "Hive 1"
    assert which_member("which of the kids likes trams?", "Kuba (5), obsessed with trams") == "Kuba"
    assert which_member("which one?", "the blue one, by the shed") is None
    assert which_member("who is afraid of dogs?", "Noor is scared of dogs") is None
    kids = "[Tomasz] Kids\n  Zofia (9), plays the cello\n  Kuba (5), obsessed with trams"
    assert line_answer("which of Tomasz's kids is the tram fan?", kids) == "Kuba"
    monkeypatch.setattr("bytechat.serve.line_answer.WHICH_MEMBER", False)
    assert line_answer("which of Tomasz's kids is the tram fan?", kids) == "Kuba (5), obsessed with trams"


def test_what_i_did_is_what_follows_the_verb(monkeypatch):
    """what_object: "what am I bringing to the book club?" is answered `snacks` of "Bring snacks,
    he has the wine", "what did I put on hive 2?" `fondant` of "put fondant on hive 2" (the
    place the question says is cut); a negated verb ("doesn't drink alcohol"), a question
    that is no "what do/did/am I <verb>", or a text that does not say the verb get none."""
    club = "Next meeting at Pieter's place. Bring snacks, he has the wine."
    assert what_object("what am I bringing to the next book club?", club) == "snacks"
    bees = "Quick check: all three hives quiet, put fondant on hive 2."
    assert what_object("what did I put on hive 2 on the 6th?", bees) == "fondant"
    assert what_object("what do I drink?", "doesn't drink alcohol, loves elderflower") is None
    assert what_object("what is Pieter bringing?", club) is None
    assert what_object("what am I cooking?", club) is None
    assert line_answer("what am I bringing?", "[Book Club] " + club) == "snacks"
    monkeypatch.setattr("bytechat.serve.line_answer.WHAT_OBJECTS", False)
    assert line_answer("what am I bringing?", "[Book Club] " + club) is None

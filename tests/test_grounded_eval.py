"""The chat-with-notes metrics: questions go through the real chat path (retrieval, notes
in the system turn, the engine), each reply is scored beside the search box's, and each
score counts what it claims to count."""

from __future__ import annotations

import json
from collections import Counter

import pytest
import torch

from bytechat.core import paths
from bytechat.eval import grounded as ge
from bytechat.eval import questions as qs
from bytechat.eval import phrasings
from bytechat.eval.small_talk import small_talk_metrics
from bytechat.model import GPT
from bytechat.notes.dialogues import everyday
from bytechat.eval.scoring import abstained, answer_f1, contains, coverage, distinct_2, real_word_rate, token_f1
from bytechat.notes import grounded
from bytechat.notes.dialogues import asking, conversation
from bytechat.notes.blocks import all_blocks
from bytechat.notes.index import NotesIndex
from bytechat.notes.roam import RoamPage, load_pages
from bytechat.serve.generate import ChatEngine
from tests.helpers import REPO, RecordingEngine, model_config, train_chat_model

PAGES = [
    RoamPage("Bees", "- hives:: 3\n- location:: behind the shed\n- {{[[TODO]]}} order new frames\n"),
    RoamPage("Marta", "- birthday:: 9 April\n- Lives in Porto with Rui.\n"),
]
NATURAL = {"unseen": REPO / "data" / "unseen-notes", "new_user": REPO / "data" / "new-user-notes"}


# ---------------------------------------------------------------- scoring


def test_f1_is_against_the_answer_span_so_pasting_a_block_costs_precision():
    assert token_f1("9 April", "9 April") == 1.0
    # the source prefix is not part of the answer; "birthday" is one extra word: P 2/3, R 1
    assert token_f1("From [Marta] birthday: 9 April", "9 April") == pytest.approx(0.8)
    pasted = "From [Marta] birthday: 9 April\nFrom [Bees] hives: 3\nFrom [Bees] location: behind the shed"
    assert answer_f1(pasted, ["9 April"]) < 0.4 and contains(pasted, ["9 April"])
    assert answer_f1("It is on 9 April.", ["9 April"]) == pytest.approx(2 * (2 / 5) * 1 / (2 / 5 + 1))
    assert answer_f1("no idea", ["9 April", "April 9"]) == 0.0
    assert answer_f1("April 9", ["9 April", "April 9"]) == 1.0  # the best alternative
    assert not contains("From [Bees] hives: 30", ["3"]) and contains("you have 3 hives.", ["3"])


def test_the_abstain_margin_is_the_one_with_the_fewest_wrong_refusals_less_right_ones():
    """refusals.calibrate: (answerable, margin) pairs; a case is refused at margin m when
    its margin is above m. Ties go to the margin nearest the default (copying.ABSTAIN_MARGIN,
    3 nats): with no evidence either way, the default stands; a model that refuses well
    keeps the refusals that pay."""
    from bytechat.eval.refusals import GRID, calibrate

    assert calibrate([]) == 3.0  # no evidence
    assert calibrate([(True, -2.0), (False, -1.0)]) == 3.0  # it prefers to refuse none: no evidence either
    assert calibrate([(True, 1.2), (True, 2.9), (False, 0.4)]) == 3.0  # its refusals cost more than they gain
    assert calibrate([(True, 0.2), (False, 0.6), (False, 1.4)]) == 0.5  # refusals that pay move it below 3
    assert calibrate([(True, -1.0), (False, 2.1), (True, 0.7), (False, 0.9)]) == 2.0  # as good as 0, nearer 3
    assert calibrate([(True, 0.3), (False, 4.1)]) == 3.0
    assert calibrate([(False, 0.3), (False, 1.1)]) == 0.0  # two right refusals, none wrong
    assert calibrate([(True, 99.0)]) == GRID[-1] == 100.0  # never refuse


def test_every_sentence_the_bot_says_when_nothing_was_found_counts_as_abstaining():
    """A refusal ("..., and your notes don't say.") is the bot abstaining too: the eval
    must count it, or abstention reads lower and false abstention too."""
    from bytechat.serve import own_words

    said = [s.decode() if isinstance(s, bytes) else s for s in own_words.none_found_sentences()]
    assert len(said) > 5 and [s for s in said if not abstained(s)] == []


def test_abstention_coverage_and_small_talk_measures():
    assert abstained("I couldn’t find that in your notes.") and not abstained("From [Bees] hives: 3")
    assert coverage("You have 3 hives behind the shed.", ["3", "behind the shed", "new frames"]) == pytest.approx(2 / 3)
    assert distinct_2(["x y z", "x y z"]) == 0.5 and distinct_2(["w x y z"]) == 1.0
    assert real_word_rate(["big cat xqzv"], {"big", "cat"}.__contains__) == pytest.approx(2 / 3)
    assert real_word_rate(["Hello! Thanks, okay: 42"]) == 1.0, "English as people chat, digits aside"
    assert real_word_rate(["a modifut pads the estable"]) == pytest.approx(1 / 3), (
        "made-up words are not (articles aside)"
    )
    said = [_result("everyday", r) for r in ("From [Rust] saves a lot", "On your Rust page: saves a lot", "Cheers!")]
    m = small_talk_metrics(said)
    assert m["quoted"] == pytest.approx(2 / 3), "small talk answered with a note's quote, in either frame"
    assert m["prompts"] == 3 and m["stop_rate"] == 1.0
    taught = everyday.topic_replies("thanks")[0]
    said = [_result("everyday", r) for r in (taught, taught + " Bye", "From [Rust] saves a lot")]
    assert small_talk_metrics(said)["taught_sentence"] == pytest.approx(1 / 3), "whole taught sentences only"


def _result(kind, reply, answers=(), baseline="", finish="stop", facts=()):
    return ge.Result(qs.Case("q", list(answers), kind, facts=list(facts)), reply, finish, baseline=baseline)


def test_set_metrics_put_the_search_box_beside_every_figure():
    results = [
        _result("fact", "9 April.", ["9 April"], baseline="From [Marta] birthday: 9 April"),
        _result("fact", "I couldn't find that in your notes.", ["3"], baseline="From [Bees] hives: 3"),
        _result("near_miss", "From [Marta] birthday: 9 April", baseline="From [Marta] birthday: 9 April"),
        _result("uncovered", "I couldn't find that in your notes.", baseline=grounded.ABSTAIN, finish="length"),
        _result("page", "3 hives, behind the shed", facts=["3", "behind the shed"], baseline="From [Bees] hives: 3"),
    ]
    m = ge.set_metrics(results)
    assert m["questions"] == 5
    assert m["answer_f1"] == pytest.approx(0.5) and m["baseline_answer_f1"] == pytest.approx((0.8 + 2 / 3) / 2)
    assert m["answer_contains"] == 0.5 and m["baseline_answer_contains"] == 1.0
    assert m["false_abstention"] == 0.5 and m["baseline_false_abstention"] == 0.0
    # near misses count: the search box always prints the page it found
    assert m["abstention"] == 0.5 and m["baseline_abstention"] == 0.5
    assert m["abstention_near_miss"] == 0.0
    # what misleads: the near miss answered (the refused fact and the refused uncovered one do not)
    assert m["wrong_answers"] == pytest.approx(1 / 4) and m["baseline_wrong_answers"] == pytest.approx(1 / 4)
    assert m["page_coverage"] == 1.0 and m["baseline_page_coverage"] == 0.5
    assert m["stop_rate"] == pytest.approx(4 / 5), "a reply cut at the byte limit did not stop"
    # the length of a reply to a question the notes answer (the page's, the refusals' aside)
    assert m["answer_bytes"] == (len("9 April.") + len("I couldn't find that in your notes.")) / 2
    assert m["baseline_answer_bytes"] == (len("From [Marta] birthday: 9 April") + len("From [Bees] hives: 3")) / 2
    assert "followup_answer_contains" not in m, "no follow-up asked"
    follow = [*results, _result("followup", "From [Bees] hives: 3", ["3"], baseline="From [Marta] birthday: 9 April")]
    m = ge.set_metrics(follow)
    assert m["followup_answer_contains"] == 1.0 and m["baseline_followup_answer_contains"] == 0.0
    assert m["answer_contains"] == pytest.approx(2 / 3), "a follow-up is an answerable question too"
    assert m["wrong_answers"] == pytest.approx(1 / 5) and m["baseline_wrong_answers"] == pytest.approx(2 / 5)
    # the model said "3" where the box pasted Marta: a gain; the abstention lost the box's "3"
    assert m["gained_on_baseline"] == pytest.approx(1 / 3) and m["lost_to_baseline"] == pytest.approx(1 / 3)


def test_a_correct_result_is_the_fact_said_or_the_notes_said_to_lack_it():
    assert _result("fact", "From [Bees] hives: 3", ["3"]).correct
    assert not _result("fact", "From [Marta] birthday: 9 April", ["3"]).correct
    assert _result("uncovered", "I couldn't find that in your notes.").correct
    assert not _result("near_miss", "From [Bees] hives: 3").correct


# ---------------------------------------------------------------- held-out phrasings


def test_heldout_cases_are_seeded_and_from_the_pages_given():
    a = qs.heldout_cases(PAGES, 8, seed=1, all_pages=PAGES, uncovered=3)
    assert a == qs.heldout_cases(PAGES, 8, seed=1, all_pages=PAGES, uncovered=3)
    assert {c.page for c in a if c.page} <= {"Bees", "Marta"}
    kinds = Counter(c.kind for c in a)
    assert kinds["uncovered"] == 3 and kinds["near_miss"] >= 1
    for c in a:
        if c.kind in qs.ANSWERING:
            assert c.answers and c.blocks
        if c.kind == "near_miss":
            assert not c.answers and c.page


def test_heldout_followups_ask_another_attribute_of_the_page_just_answered():
    """Each is seeded: an attribute question and its quote, then another key of the same
    page asked with a pronoun; the gold is that key's value, in its block."""
    pages = [
        RoamPage("Marta", "- type:: #person\n- birthday:: 9 April\n- job:: dentist\n- She lives in Porto.\n"),
        RoamPage("Bees", "- hives:: 3\n- location:: behind the shed\n"),
        RoamPage("Ideas", "- build a bird box\n"),
    ]
    cases = qs.heldout_followups(pages, 5, seed=4)
    assert cases == qs.heldout_followups(pages, 5, seed=4) and {c.page for c in cases} == {"Marta", "Bees"}
    blocks = {(b.page, b.position): b.text for b in all_blocks(pages)}
    for c in cases:
        assert c.kind == "followup" and len(c.history) == 2 and c.history[1]["content"].startswith(f"From [{c.page}] ")
        assert any(p in c.question.lower() for p in ("her", "its")), c.question  # Marta is a she, the bees an it
        (block,) = c.blocks
        assert c.answers[0] in blocks[block] and c.answers[0] not in c.history[1]["content"]
        assert "#person" not in c.answers[0]  # a tag is no fact


def test_heldout_questions_never_use_a_training_template():
    """No fixed piece of a held-out template (10 characters or more: "how many" is how
    anyone asks) is part of a training template, and the uncovered topics differ."""
    train_pieces = " | ".join(t.lower() for ts in asking.TEMPLATES.values() for t in ts)
    train_pieces += " | " + " | ".join((*asking.UNCOVERED_TEMPLATES, *asking.UNCOVERED_TOPICS)).lower()
    train_pieces += " | " + " | ".join(t for ts in conversation.FOLLOW_UPS.values() for t in ts).lower()
    for piece in heldout_pieces():
        assert piece not in train_pieces, piece
    assert not set(phrasings.UNCOVERED_TOPICS) & set(asking.UNCOVERED_TOPICS)


def test_no_training_code_imports_the_eval_phrasings():
    """The dialogue generator and every stage but eval's never see the held-out family."""
    sources = [*(REPO / "bytechat" / "notes").rglob("*.py"), *(REPO / "bytechat" / "train").rglob("*.py")]
    sources += [p for p in (REPO / "stages").glob("*.py") if p.name != "eval.py"]
    assert sources
    for path in sources:
        imports = [
            l for l in path.read_text(encoding="utf-8").splitlines() if l.lstrip().startswith(("from ", "import "))
        ]
        assert not [l for l in imports if "phrasings" in l or "bytechat.eval.grounded" in l], path


def heldout_pieces(min_len: int = 10) -> list[str]:
    import re

    templates = [t for ts in phrasings.HELDOUT_TEMPLATES.values() for t in ts]
    templates += [*phrasings.NEAR_MISS_TEMPLATES, *phrasings.UNCOVERED_TEMPLATES, *phrasings.FOLLOWUP_TEMPLATES]
    pieces = {p.strip().lower() for t in templates for p in re.split(r"\{\w+\}", t)}
    return sorted(p for p in pieces if len(p) >= min_len)


def test_a_keyword_question_is_answered_by_any_note_holding_its_word():
    """ "was there a note mentioning glass?" with two notes on glass: either is right; a
    note that only shares the word's stem counts too, as search matched it ("glasses")."""
    pages = [
        RoamPage("Habits", "- Morning\n    - a glass of it\n"),
        RoamPage("Running", "- Fuelling\n    - After: two glasses of milk\n"),
        RoamPage("Bees", "- hives:: 3\n- Hive two swarmed in May\n"),
    ]
    cases = (c for seed in range(50) for c in qs.heldout_cases(pages, 20, seed, pages) if c.kind == "keyword")
    case = next(c for c in cases if "glass" in c.question.lower())
    assert sorted(case.answers) == ["After: two glasses of milk", "a glass of it"]
    assert {("Habits", 0), ("Running", 0)} <= set(case.blocks) and ("Bees", 1) not in case.blocks


def test_typed_questions_are_lower_case_or_have_one_typo():
    import random

    rng = random.Random(0)
    out = [phrasings.typed("Could you check the location for Bees?", rng) for _ in range(200)]
    assert any(o == "could you check the location for bees" for o in out)
    typos = [o for o in out if o.lower().rstrip("?") != "could you check the location for bees"]
    assert typos and all(len(o.rstrip("?")) == len("Could you check the location for Bees") for o in typos)


# ---------------------------------------------------------------- asking


def test_ask_runs_the_chat_path_and_the_search_box_beside_it():
    engine = ChatEngine(train_chat_model())
    with NotesIndex.build(all_blocks(PAGES)) as index:
        result = ge.ask(engine, index, "hi", max_bytes=16)
        assert result.sources == [] and result.finish in ("stop", "length")
        assert result.baseline == grounded.ABSTAIN  # nothing retrieved: the search box finds nothing
        # Too small a context for notes (64 bytes): retrieval keeps nothing, chat goes on.
        assert ge.ask(engine, index, "when is Marta's birthday?", max_bytes=8).sources == []


def marta_follow_up() -> qs.Case:
    return qs.Case(
        "and her birthday?",
        ["9 April"],
        "followup",
        "Marta",
        history=[{"role": "user", "content": "where does Marta live?"}, {"role": "assistant", "content": "Porto."}],
        blocks=[("Marta", 0)],
    )


def test_a_followup_is_asked_after_its_history(monkeypatch):
    engine = RecordingEngine()
    case = marta_follow_up()
    with NotesIndex.build(all_blocks(PAGES)) as index:
        result = ge.ask(engine, index, case.question, case=case)
    seen = [messages for messages, _ in engine.calls]
    # the follow-up alone names no page; retrieval falls back on the conversation (its
    # previous user turn), and the prompt holds the notes and the newest turn
    assert seen[0][-1] == {"role": "user", "content": "and her birthday?"}
    assert result.sources and result.sources[0] == "Marta"
    assert result.baseline.startswith("From [Marta]")


@pytest.mark.parametrize("faithful", [False, True])
def test_asking_in_a_batch_gives_what_asking_one_at_a_time_gives(faithful):
    """The eval and the answer probe decode their questions together (ask_batched): each
    result, reply and sources and search box, is the one ask() gives alone."""
    torch.manual_seed(3)  # a random model with room for notes: its replies differ, some are quotes (faithful)
    engine = ChatEngine(GPT(model_config(n_layer=2, n_head=2, n_embd=32, block_size=512)).eval())
    follow_up = marta_follow_up()
    cases = [*qs.heldout_cases(PAGES, 6, 0, PAGES, uncovered=2), follow_up, qs.Case("hi", [], "everyday")]
    with NotesIndex.build(all_blocks(PAGES)) as index:
        alone = [ge.ask(engine, index, c.question, max_bytes=40, case=c, faithful=faithful) for c in cases]
        together = ge.ask_batched(engine, index, cases, max_bytes=40, faithful=faithful, max_batch=3)
    assert together == alone
    # not a trivial match: notes were found for most questions, and (faithful) the replies
    # quote them; a random model decoding freely says nearly the same whatever it is shown
    assert sum(bool(r.sources) for r in alone) > 4 and len({r.reply for r in alone}) > (5 if faithful else 1)


# ---------------------------------------------------------------- the hand-written sets


@pytest.mark.parametrize("name", sorted(NATURAL))
def test_hand_written_sets_resolve_against_their_notes(name):
    """Every question names a page of its graph, its block is one of that page's blocks,
    each gold span is in that block and each page fact on its page; a third is test."""
    folder = NATURAL[name]
    pages = load_pages(folder)
    texts = {p.name: "\n".join(b.text for b in all_blocks([p])) for p in pages}
    cases = qs.load_questions(folder / qs.QUESTIONS_FILE, pages)
    blocks = {(b.page, b.position): b.text for b in all_blocks(pages)}
    for c in cases:
        if c.kind in qs.ANSWERING:
            assert c.blocks and c.answers, c.id
            assert all(contains(blocks[c.blocks[0]], [a]) for a in c.answers), c.id
        if c.kind == "page":
            assert len(c.facts) >= 3 and all(contains(texts[c.page], [f]) for f in c.facts), c.id
        if c.kind in qs.ABSTAINING:
            assert not c.answers, c.id
    assert len({c.id for c in cases}) == len(cases)
    test_share = sum(c.split == "test" for c in cases) / len(cases)
    assert 0.25 <= test_share <= 0.4
    assert {c.split for c in cases} == {"dev", "test"}


def test_the_natural_set_has_every_kind_of_question_a_person_asks():
    cases = qs.load_questions(NATURAL["unseen"] / qs.QUESTIONS_FILE, load_pages(NATURAL["unseen"]))
    kinds = Counter(c.kind for c in cases)
    assert len(cases) >= 120 and len(load_pages(NATURAL["unseen"])) >= 15
    assert kinds["followup"] >= 25 and kinds["paraphrase"] >= 15 and kinds["typo"] >= 10
    assert kinds["inflection"] >= 10 and kinds["near_miss"] >= 15 and kinds["page"] >= 15
    assert all(c.history and c.history[-1]["role"] == "assistant" for c in cases if c.kind == "followup")


def test_a_bad_question_file_is_one_line_naming_the_line_and_field(tmp_path):
    good = {"id": "a", "split": "dev", "kind": "fact", "history": [], "question": "q", "answers": ["3"], "page": "Bees"}
    for bad, field_error in (
        ({**good, "answers": "3"}, r":1: answers: expected list"),
        ({**good, "kind": "quiz"}, r":1: kind: 'quiz' is none of"),
        ({**good, "page": "Nowhere"}, r":1: page: 'Nowhere' is not a page"),
        ({**good, "block": "hives:: 4"}, r":1: block: 'hives:: 4' is in no block of \[Bees\]"),
    ):
        path = tmp_path / "questions.jsonl"
        path.write_text(json.dumps(bad) + "\n", encoding="utf-8")
        with pytest.raises(qs.QuestionsError, match=field_error) as info:
            qs.load_questions(path, PAGES)
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    path.write_text("{not json\n", encoding="utf-8")
    with pytest.raises(qs.QuestionsError, match=r":1: not JSON"):
        qs.load_questions(path, PAGES)


def test_retrieval_quality_counts_first_blocks_that_answer(tmp_path, capsys, monkeypatch):
    """tools.retrieval_quality on split files written here: attribute questions on pages
    whose keys are distinct are all answered first; the natural set's dev part is measured too."""
    from tools import retrieval_quality

    pages = [*PAGES, RoamPage("Books/The Midnight Library", "- status:: finished\n- finished:: July 30th, 2026\n")]
    for name, chosen in (("roam_train.jsonl", pages), ("roam_val.jsonl", pages[:1])):
        lines = [json.dumps({"id": p.name, "text": f"{p.name}\n{p.text}"}) for p in chosen]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert retrieval_quality.main(["--splits", str(tmp_path), "--seeds", "3", "--per-seed", "10"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["heldout_train"]["questions"] > 0 and report["heldout_val"]["questions"] > 0
    assert report["natural_dev"]["questions"] >= 60 and "natural_test" not in report, "the test part is kept"
    with NotesIndex.build(all_blocks(pages)) as index:
        wrong = qs.Case("when did I finish The Midnight Library?", ["nowhere"], "fact", "Bees", blocks=[("Bees", 0)])
        assert retrieval_quality.measure(index, [wrong])["recall_at_1"] == 0.0
        right = qs.Case("when did I finish The Midnight Library?", ["July 30th, 2026"], "fact")
        uncovered = qs.Case("what is my blood type?", [], "uncovered")
        figures = retrieval_quality.measure(index, [right, uncovered])
        assert figures["recall_at_1"] == 1.0 and figures["none_uncovered"] == 1.0 and figures["false_none"] == 0.0


def test_unseen_notes_path_follows_the_root(tmp_path, monkeypatch):
    monkeypatch.setenv("BYTECHAT_ROOT", str(tmp_path))
    assert qs.unseen_notes() == tmp_path / "data" / "unseen-notes"
    assert paths.root() == tmp_path


def test_the_small_talk_probe_splits_by_line_and_asks_nothing_training_teaches(tmp_path):
    from bytechat.eval.small_talk import PROBE_FILE, is_taught, probe, taught_texts

    (tmp_path / PROBE_FILE).parent.mkdir(parents=True)
    (tmp_path / PROBE_FILE).write_text("good afternoon!\nthanks heaps, mate\n\nwhat's cooking, bot?\n")
    assert probe(tmp_path) == {
        "small_talk_dev": ["good afternoon!", "what's cooking, bot?"],
        "small_talk_test": ["thanks heaps, mate"],
    }
    assert probe(tmp_path, untaught=True)["small_talk_dev"] == ["what's cooking, bot?"], "a taught prompt is not asked"
    assert is_taught("Who made you?", taught_texts()), "a primer turn is taught too"
    assert is_taught("good night, sleep well", ["good night, sleep well! see you tomorrow."])  # 20+ chars, inside
    assert not is_taught("lol", ["lol, that's funny"]), "a short line counts only as a whole message"
    assert probe(tmp_path / "elsewhere") == {}

"""The chat-with-notes metrics: questions go through the real chat path (retrieval, notes
in the system turn, the engine), and the scoring counts what it claims to count."""

from __future__ import annotations


from bytechat import grounded_eval as ge
from bytechat.data.roam import RoamPage, load_pages
from bytechat.generate import ChatEngine
from bytechat.notes import all_blocks
from bytechat.notes_index import NotesIndex
from tests.helpers import train_chat_model

PAGES = [
    RoamPage("Bees", "- hives:: 3\n- location:: behind the shed\n- {{[[TODO]]}} order new frames\n"),
    RoamPage("Marta", "- birthday:: 9 April\n- Lives in Porto with Rui.\n"),
]


def test_scoring_counts_gold_facts_and_abstentions():
    hit = ge.Result(ge.Case("how many hives?", ["3"]), "From [Bees] hives: 3", "stop")
    miss = ge.Result(ge.Case("how many hives?", ["3"]), "From [Marta] birthday: 9 April", "stop")
    abstain = ge.Result(ge.Case("passport?", []), "I couldn’t find that in your notes.", "stop")
    made_up = ge.Result(ge.Case("passport?", []), "From [Bees] hives: 3", "stop")
    assert [r.correct for r in (hit, miss, abstain, made_up)] == [True, False, True, False]
    assert ge.share([hit, miss, abstain, made_up]) == 0.5
    assert ge.share([]) == 0.0


def test_cases_come_from_the_pages_given_and_are_seeded():
    a = ge.page_cases(PAGES, 4, seed=1, all_pages=PAGES)
    assert a == ge.page_cases(PAGES, 4, seed=1, all_pages=PAGES)
    assert len(a) == 4 and {c.page for c in a} <= {"Bees", "Marta"}
    assert all(c.gold and c.position is not None for c in a)
    uncovered = ge.uncovered_cases(5, seed=2)
    assert len(uncovered) == 5 and all(not c.gold for c in uncovered)


def test_a_keyword_question_is_answered_by_any_note_holding_its_word():
    """ "anything about glass?" with two notes on glass: quoting either is right; a note
    that only shares the word's stem counts too, as search matched it ("glasses")."""
    pages = [
        RoamPage("Habits", "- Morning\n    - a glass of it\n"),
        RoamPage("Running", "- Fuelling\n    - After: two glasses of milk\n"),
        RoamPage("Bees", "- hives:: 3\n- Hive two swarmed in May\n"),
    ]
    cases = (c for seed in range(50) for c in ge.page_cases(pages, 20, seed, pages) if c.kind == "keyword")
    case = next(c for c in cases if "glass" in c.question.lower())
    assert sorted(case.gold) == ["After: two glasses of milk", "a glass of it"]
    assert case.answered_by("Habits", 0) and case.answered_by("Running", 0) and not case.answered_by("Bees", 1)
    assert ge.Result(case, "From [Running] Fuelling\n  After: two glasses of milk", "stop").correct
    assert not ge.Result(case, "From [Bees] hives: 3", "stop").correct


def test_recall_at_3_finds_the_gold_block():
    with NotesIndex.build(all_blocks(PAGES)) as index:
        good = ge.Case("when is Marta's birthday?", ["9 April"], "Marta", 0)
        wrong = ge.Case("when is Marta's birthday?", ["9 April"], "Bees", 0)
        assert ge.recall_at_3(index, [good]) == 1.0
        assert ge.recall_at_3(index, [good, wrong]) == 0.5


def test_ask_runs_the_chat_path_and_names_sources():
    engine = ChatEngine(train_chat_model())
    with NotesIndex.build(all_blocks(PAGES)) as index:
        result = ge.ask(engine, index, "hi", max_bytes=16)
        assert result.sources == [] and result.finish in ("stop", "length")
        assert isinstance(result.reply, str)
        # Too small a context for notes (64 bytes): retrieval keeps nothing, chat goes on.
        assert ge.ask(engine, index, "when is Marta's birthday?", max_bytes=8).sources == []


def test_the_unseen_notes_folder_answers_its_own_questions():
    """Every hand-written question with a gold fact names a page whose text holds it."""
    pages = {p.name: p.text for p in load_pages(ge.UNSEEN_NOTES)}
    cases = ge.unseen_cases()
    assert len(cases) >= 15 and any(not c.gold for c in cases)
    for case in cases:
        if case.gold:
            assert any(g in pages[case.page] for g in case.gold), case.question
    with NotesIndex.build(all_blocks(load_pages(ge.UNSEEN_NOTES))) as index:
        found = [c for c in cases if c.gold and any(h.page == c.page for h in index.search(c.question, 3))]
        assert len(found) >= 0.8 * sum(1 for c in cases if c.gold), "retrieval finds most answers"


def test_retrieval_quality_counts_first_blocks_that_answer(tmp_path, capsys):
    """tools.retrieval_quality on split files written here: attribute questions on pages
    whose keys are distinct are all answered first; a page whose two blocks share the
    key's word but only one is keyed still gets its keyed block first."""
    import json as _json

    from tools import retrieval_quality

    pages = [*PAGES, RoamPage("Books/The Midnight Library", "- status:: finished\n- finished:: July 30th, 2026\n")]
    for name, chosen in (("roam_train.jsonl", pages), ("roam_val.jsonl", pages[:1])):
        lines = [_json.dumps({"id": p.name, "text": f"{p.name}\n{p.text}"}) for p in chosen]
        (tmp_path / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert retrieval_quality.main(["--splits", str(tmp_path), "--seeds", "3", "--per-seed", "10"]) == 0
    report = _json.loads(capsys.readouterr().out)
    assert report["train_pages"]["questions"] > 0 and report["val_pages"]["questions"] > 0
    assert report["train_pages"]["top1"] == 1.0 and report["train_pages"]["recall_at_3"] == 1.0, report
    with NotesIndex.build(all_blocks(pages)) as index:
        wrong = ge.Case("when did I finish The Midnight Library?", ["nowhere"], "Bees", 0)
        assert retrieval_quality.measure(index, [wrong])["top1"] == 0.0

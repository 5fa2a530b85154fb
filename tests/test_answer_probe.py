"""The answer probe (bytechat.eval.answer_probe) and how best.pt is picked with it
(bytechat.train.step.is_better)."""

from __future__ import annotations

import json

import pytest
import torch

from bytechat.core import paths
from bytechat.eval.answer_probe import AnswerProbe, ProbeError
from bytechat.model.checkpoint import load_checkpoint
from bytechat.notes.roam import RoamPage
from bytechat.eval import phrasings
from bytechat.eval.questions import Case, heldout_sets, split_pages
from bytechat.notes.blocks import all_blocks
from bytechat.notes.index import NotesIndex
from bytechat.train.step import is_better
from tests.helpers import make_root, train_chat_model, train_tiny

PAGES = {
    "train": {
        "Bees": "- hives:: 3\n- Hive 2 swarmed in May; the new queen is marked blue.\n",
        "Car": "- next service:: 12 January 2027\n- The winter tyres are in the garage.\n",
        "Kombucha": "- The SCOBY came from Lena.\n- Second ferment: ginger and lemon, three days.\n",
    },
    "val": {"Marta": "- Lives in Porto with Rui and their dog Bolacha.\n- birthday:: 9 April\n"},
}


def write_notes() -> None:
    """The split stage's roam files and the notes index, for the current root."""
    splits = paths.splits_dir()
    splits.mkdir(parents=True, exist_ok=True)
    pages = []
    for split, texts in PAGES.items():
        rows = [json.dumps({"id": title, "text": f"{title}\n{text}"}) for title, text in texts.items()]
        (splits / f"roam_{split}.jsonl").write_text("\n".join(rows) + "\n", encoding="utf-8")
        pages += [RoamPage(title, text) for title, text in texts.items()]
    paths.notes_index().parent.mkdir(parents=True, exist_ok=True)
    NotesIndex.build(all_blocks(pages), paths.notes_index()).close()


# ---------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    ("candidate", "best", "wins"),
    [
        ((1.0, None), (None, None), True),  # the first evaluation
        ((0.9, None), (1.0, None), True),  # no probe: lower val/loss
        ((1.1, None), (1.0, None), False),
        ((1.3, 0.0), (1.0, None), True),  # a chat-phase model beats one that cannot hold a turn
        ((0.5, None), (1.0, 0.2), False),
        ((1.3, 0.8), (1.2, 0.7), True),  # more right answers beat a lower loss
        ((1.1, 0.6), (1.2, 0.7), False),
        ((1.1, 0.7), (1.2, 0.7), True),  # equal answers: val/loss decides
        ((1.3, 0.7), (1.2, 0.7), False),
    ],
)
def test_best_goes_by_right_answers_first_then_val_loss(candidate, best, wins):
    assert is_better(*candidate, *best) is wins


# ---------------------------------------------------------------- the probe


def test_probe_scores_the_share_of_right_replies_and_leaves_the_model_and_rng_alone(tmp_path):
    model = train_chat_model()  # answers "hi" with "hello", "日本" with "日本語🙂"
    NotesIndex.build(all_blocks([RoamPage("Bees", PAGES["train"]["Bees"])]), tmp_path / "index.sqlite").close()
    cases = [Case("hi", ["hello"], "fact"), Case("日本", ["日本語"], "fact"), Case("hi", ["goodbye"], "fact")]
    weights = {k: (v.clone(), v.stride()) for k, v in model.state_dict().items()}
    rng = torch.get_rng_state()
    assert AnswerProbe(cases, tmp_path / "index.sqlite").score(model) == pytest.approx(2 / 3)
    assert torch.equal(torch.get_rng_state(), rng), "a run's batches must not depend on the probe"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, weights[name][0]) and tensor.stride() == weights[name][1], name


def test_probe_asks_held_out_phrasings_about_train_pages_never_what_the_eval_asks(tiny_root):
    """Selection must not see the eval: no probe question is an eval question, no probe
    question is about a validation page (the eval's heldout_val), and uncovered
    questions use topics of the probe's own."""
    write_notes()
    probe = AnswerProbe.for_run(10, seed=3)
    assert 5 <= len(probe.cases) <= 10  # three small pages hold fewer distinct questions
    kinds = [c.kind for c in probe.cases]
    assert kinds.count("uncovered") == 2 and len(set(kinds)) >= 3
    assert all(c.page in PAGES["train"] for c in probe.cases if c.page)
    train_pages, val_pages = split_pages()
    asked = {c.question for cases in heldout_sets(train_pages, val_pages, 3).values() for c in cases}
    assert not asked & {c.question for c in probe.cases}
    assert all(any(t in c.question for t in phrasings.PROBE_TOPICS) for c in probe.cases if c.kind == "uncovered")
    again = AnswerProbe.for_run(10, seed=3)
    assert [(c.question, c.answers) for c in again.cases] == [(c.question, c.answers) for c in probe.cases]


def test_a_missing_notes_index_is_one_clear_error(tmp_path, monkeypatch, capsys):
    from bytechat.train.trainer import main

    root = make_root(tmp_path / "repo", answer_probe=4)
    monkeypatch.setenv("BYTECHAT_ROOT", str(root))
    with pytest.raises(ProbeError, match=r"notes/index\.sqlite: missing.*dvc repro index.*answer_probe: 0"):
        AnswerProbe.for_run(4, seed=0)
    assert main(["--profile", "tiny", "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "train.answer_probe needs it" in err[0]


# ---------------------------------------------------------------- in a run


def test_the_probe_picks_best_pt_in_the_chat_phase_and_changes_no_weights(tmp_path, monkeypatch, one_thread):
    """Same seed, with and without the probe: bit-identical weights (the probe runs on a
    copy, its RNG use forked away); with it, best.pt records the answers it was picked by."""
    runs = {}
    for probe in (0, 5):
        root = make_root(tmp_path / f"probe{probe}", answer_probe=probe)
        monkeypatch.setenv("BYTECHAT_ROOT", str(root))
        write_notes()
        train_tiny()
        checkpoints = paths.checkpoints_dir("tiny")
        runs[probe] = (load_checkpoint(checkpoints / "last.pt"), load_checkpoint(checkpoints / "best.pt"))
    (last_without, best_without), (last_with, best_with) = runs[0], runs[5]
    for name, tensor in last_without["model"].items():
        assert torch.equal(tensor, last_with["model"][name]), name
    assert best_without["best_answers"] is None and last_without["answers"] is None
    # steps 12, eval_every 6, chat phase from step 9: step 6 has no answers, step 12 has.
    assert last_with["answers"] is not None and 0.0 <= last_with["answers"] <= 1.0
    assert best_with["step"] == 12 and best_with["best_answers"] == last_with["answers"]

"""Whole-stream evaluation: every byte scored once, bits per byte, compressors, the eval
stage's outputs and the bytechat-eval command line."""

from __future__ import annotations

import json
import math
import os
import re
import shutil

import numpy as np
import pytest
import torch

from bytechat.notes.index import index_folder
from hypothesis import given
from hypothesis import strategies as st

from bytechat.core import paths
from bytechat.core.config import ModelConfig
from bytechat.eval.bpb import compressor_bpb, evaluate_profile, main, plan_windows, score_bytes
from bytechat.model import GPT
from bytechat.eval.grounded import EVERYDAY_PROMPTS
from tests.helpers import REPO, TINY_MODEL
from tests.helpers import train_tiny as run

pytestmark = pytest.mark.usefixtures("one_thread")


@given(n_bytes=st.integers(0, 400), block=st.integers(1, 40))
def test_windows_predict_every_byte_after_the_first_exactly_once(n_bytes, block):
    scored = []
    for w in plan_windows(n_bytes, block):
        assert 0 <= w.start and w.start + w.length + 1 <= n_bytes  # targets stay inside the stream
        assert 1 <= w.length <= block and 0 <= w.skip < w.length
        scored += range(w.start + 1 + w.skip, w.start + 1 + w.length)
    assert sorted(scored) == list(range(1, n_bytes))


def tiny_model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(ModelConfig(**TINY_MODEL)).eval()


def test_uniform_model_scores_8_bits_per_byte():
    model = tiny_model()
    with torch.no_grad():
        model.wte.weight.zero_()  # tied output layer: all logits 0, every byte has p = 1/256
    data = np.random.default_rng(0).integers(0, 256, 101, dtype=np.uint8)  # 100 targets: 3 full windows + tail
    score = score_bytes(model, data, progress=False)
    assert score.loss == pytest.approx(math.log(256), rel=1e-6)
    assert score.bpb == pytest.approx(8.0, rel=1e-6) and score.bytes == 101


def test_one_window_equals_the_models_own_loss():
    model = tiny_model()
    data = bytes(range(33))  # exactly block_size + 1 bytes
    x = torch.tensor([list(data[:-1])])
    y = torch.tensor([list(data[1:])])
    with torch.no_grad():
        _, loss = model(x, y)
    assert score_bytes(model, data, progress=False).loss == pytest.approx(float(loss), rel=1e-6)


def test_batching_does_not_change_the_score():
    model = tiny_model()
    data = np.frombuffer(("the quick brown fox jumps over the lazy dog. " * 9).encode(), dtype=np.uint8)
    one = score_bytes(model, data, batch_size=1, progress=False)
    many = score_bytes(model, data, batch_size=7, progress=False)
    assert one.loss == pytest.approx(many.loss, rel=1e-6)


def test_too_short_input_is_an_error():
    with pytest.raises(ValueError, match="at least 2 bytes"):
        score_bytes(tiny_model(), b"a", progress=False)


def test_compressor_reference_numbers():
    repetitive = compressor_bpb(b"abcabcabc" * 1000)
    random_bytes = compressor_bpb(os.urandom(20000))
    assert set(repetitive) == {"gzip_bpb", "bz2_bpb", "xz_bpb"}
    assert all(v < 0.5 for v in repetitive.values())
    assert all(v > 7.9 for v in random_bytes.values())


def write_tiny_notes() -> None:
    """The split stage's roam pages and the index stage's index, for the notes metrics."""
    pages = {"Bees": "- hives:: 3\n- location:: behind the shed\n", "Marta": "- birthday:: 9 April\n"}
    paths.splits_dir().mkdir(parents=True, exist_ok=True)
    for split, names in (("train", ["Bees"]), ("val", ["Marta"])):
        lines = [json.dumps({"id": n, "text": f"{n}\n{pages[n]}"}) for n in names]
        (paths.splits_dir() / f"roam_{split}.jsonl").write_text("\n".join(lines) + "\n")
    folder = paths.root() / "notes"
    folder.mkdir()
    for name, text in pages.items():
        (folder / f"{name}.md").write_text(text)
    index_folder(folder, paths.notes_index(), progress=False).close()
    # the natural set: the shipped graph, a few of its questions of each split
    unseen = paths.root() / "data" / "unseen-notes"
    shutil.copytree(REPO / "data" / "unseen-notes", unseen)
    rows = (unseen / "questions.jsonl").read_text().splitlines()
    picked = [r for split in ("dev", "test") for r in [r for r in rows if f'"split": "{split}"' in r][:4]]
    (unseen / "questions.jsonl").write_text("\n".join(picked) + "\n")
    (paths.root() / "data" / "small-talk-probe.txt").write_text("thanks a lot, see you\nhello there\n")


def test_eval_stage_writes_metrics_and_samples(tiny_root, monkeypatch):
    run()
    write_tiny_notes()
    metrics = evaluate_profile("tiny", device=torch.device("cpu"), progress=False)
    chat = metrics["chat"]
    small_talk = {"everyday", "small_talk_dev", "small_talk_test"}
    assert set(chat) == {
        "heldout_train",
        "heldout_val",
        "heldout_followups",
        "natural_dev",
        "natural_test",
        *small_talk,
    }
    assert chat["natural_dev"]["questions"] == 4 and chat["everyday"]["prompts"] == len(EVERYDAY_PROMPTS)
    assert chat["small_talk_dev"]["prompts"] == 1 and all("quoted" in chat[name] for name in small_talk)
    for name, m in chat.items():
        assert all(
            0.0 <= v <= 1.0
            for k, v in m.items()
            if k not in ("questions", "prompts", "mean_reply_bytes") and not k.endswith("answer_bytes")
        ), m
        for key in [k for k in m if k in ("answer_f1", "abstention", "false_abstention", "page_coverage")]:
            assert f"baseline_{key}" in m, (name, key)
    assert chat["heldout_train"]["recall_at_3"] == 1.0, "two pages: retrieval finds the asked block"
    samples = (paths.artifacts() / "eval" / "tiny" / "grounded_samples.txt").read_text()
    assert samples.count("search box: ") >= 20 and samples.count("F1 ") >= 4
    # each set is asked about its own pages: train results never stand in for validation
    sections = dict(part.split("\n", 1) for part in samples.split("## ")[1:])
    golds = {name: re.findall(r"gold (\[.*?\]) ·", sections[name]) for name in ("heldout_train", "heldout_val")}
    assert golds["heldout_train"] and all("9 April" not in g for g in golds["heldout_train"])
    assert golds["heldout_val"] and all(g == "['9 April']" for g in golds["heldout_val"])
    out = paths.artifacts() / "eval" / "tiny"
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert metrics["step"] == 12
    from bytechat.eval import refusals
    from bytechat.model.export import load_model
    from bytechat.serve.generate import ChatEngine

    assert not metrics["chat_faithful"] and metrics["chat_abstain_margin"] is None  # free decoding: no margin
    engine = ChatEngine(*load_model(paths.checkpoints_dir("tiny") / "best.pt", device="cpu")[:1])
    margin = refusals.calibrated_margin(engine, 1337)  # what faithful decoding calibrates
    assert margin in refusals.GRID and margin == refusals.calibrated_margin(engine, 1337)
    asked, measure = [], refusals.margins  # calibrated on held-out questions and follow-ups alike
    monkeypatch.setattr(
        refusals, "margins", lambda e, i, cases: asked.extend(c.kind for c in cases) or measure(e, i, cases)
    )
    refusals.calibrated_margin(engine, 1337)
    assert "followup" in asked and "near_miss" in asked, set(asked)
    for name in ("wiki_val", "roam_val", "primer_val", "wiki_test"):
        m = metrics[name]
        assert set(m) == {"loss", "bpb", "gzip_bpb", "bz2_bpb", "xz_bpb", "bytes"}
        assert m["bpb"] == pytest.approx(m["loss"] / math.log(2))
        assert m["bytes"] == paths.stream_path(*name.split("_")).stat().st_size
        assert 0 < m["bpb"] < 9
    samples = (out / "samples.txt").read_text()
    assert samples.startswith("# bytechat tiny: best.pt at step")
    assert samples.count("\nassistant: ") >= 5
    again = evaluate_profile("tiny", device=torch.device("cpu"), progress=False)
    assert again == metrics and (out / "samples.txt").read_text() == samples  # deterministic


def test_cli_scores_a_checkpoint_on_files(tiny_root, tmp_path, capsys):
    run()
    text = tmp_path / "notes.txt"
    text.write_text("the cat sat on the mat. " * 30)
    ckpt = paths.checkpoints_dir("tiny") / "last.pt"
    assert main(["--ckpt", str(ckpt), str(text), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "notes.txt" in out and "bpb" in out and "xz" in out
    assert main(["--ckpt", str(ckpt), str(tmp_path / "missing.txt"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "missing.txt" in err and len(err.strip().splitlines()) == 1


def run_stage(script: str, *args: str) -> int:
    """Run a stage script in this process (as `python stages/x.py args`); its exit code."""
    import runpy
    import sys
    from pathlib import Path

    argv, sys.argv = sys.argv, [script, *args]
    try:
        runpy.run_path(str(Path(__file__).resolve().parent.parent / script), run_name="__main__")
    except SystemExit as end:
        return int(end.code or 0)
    finally:
        sys.argv = argv
    return 0


def test_export_stage_exports_best_and_the_export_scores_like_the_checkpoint(tiny_root, tmp_path, capsys):
    run()
    assert run_stage("stages/export.py", "--profile", "tiny") == 0
    export = paths.export_dir("tiny")
    assert {p.name for p in export.iterdir()} == {"model.safetensors", "config.json"}
    assert json.loads((export / "config.json").read_text())["source_checkpoint"].endswith("best.pt")
    assert json.loads((export / "config.json").read_text())["abstain_margin"] is None  # no eval yet
    metrics = paths.eval_dir("tiny") / "metrics.json"
    metrics.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_text(json.dumps({"chat_abstain_margin": 2.5}))  # the eval's calibration ...
    assert run_stage("stages/export.py", "--profile", "tiny") == 0
    assert json.loads((export / "config.json").read_text())["abstain_margin"] == 2.5  # ... is carried
    metrics.write_text("{not json")
    capsys.readouterr()
    assert run_stage("stages/export.py", "--profile", "tiny") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "metrics.json: unreadable eval metrics" in err[0], err
    metrics.unlink()
    text = tmp_path / "notes.txt"
    text.write_text("the cat sat on the mat. " * 30)
    capsys.readouterr()
    tables = []
    for model in (export, paths.checkpoints_dir("tiny") / "best.pt"):
        assert main(["--ckpt", str(model), str(text), "--device", "cpu"]) == 0
        tables.append(capsys.readouterr().out)
    assert tables[0] == tables[1]


def test_eval_and_export_stages_fail_in_one_line_without_checkpoints(tiny_root, capsys):
    for script in ("stages/eval.py", "stages/export.py"):
        assert run_stage(script, "--profile", "tiny") == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "no valid checkpoint" in err[0], err

"""Training: outputs, metrics, optimizer groups, resume decisions. Tiny configs only
(2 layers x 32 wide, block 32); the kill-and-resume test is in test_resume.py."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
import yaml

from bytechat import checkpoint as ckpt_io
from bytechat import paths
from bytechat.config import ConfigError, TrainConfig
from bytechat.streams import write_stream

TINY_MODEL = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}
TINY_TRAIN = {
    "steps": 12, "batch_size": 4, "grad_accum": 2, "lr": 0.003, "min_lr": 0.0001, "warmup_steps": 3,
    "eval_every": 6, "eval_batches": 2, "checkpoint_every": 4, "log_every": 2, "dtype": "fp32",
}  # fmt: skip
WORDS = "the cat sat on a mat and then went to sleep while dogs barked at the moon".split()


def write_params(root: Path, *, seed: int = 7, **train_overrides) -> Path:
    params = {
        "seed": seed,
        "data": {"wikitext_source": "offline", "wikitext_config": "wikitext-2-raw-v1", "val_fraction": 0.1},
        "p_train": {"wiki": 0.6, "roam": 0.3, "primer": 0.1},
        "profiles": {"tiny": {"model": dict(TINY_MODEL), "train": {**TINY_TRAIN, **train_overrides}}},
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def write_tiny_streams(root: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    streams = root / "artifacts" / "streams"
    for source in ("wiki", "roam", "primer"):
        for split, n_docs in (("train", 60), ("val", 12)):
            docs = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n_docs)]
            write_stream(docs, streams / f"{source}_{split}.bin", source)
    write_stream(["a test document, " * 20], streams / "wiki_test.bin", "wiki")


def make_root(root: Path, **train_overrides) -> Path:
    """A repo root with params.yaml (profile "tiny") and tiny streams."""
    root.mkdir(parents=True, exist_ok=True)
    write_params(root, **train_overrides)
    write_tiny_streams(root)
    return root


def point_paths_at(monkeypatch: pytest.MonkeyPatch, root: Path) -> None:
    """bytechat.paths reads its root at import: move its module constants for this test."""
    monkeypatch.setattr(paths, "ROOT", root)
    monkeypatch.setattr(paths, "PARAMS", root / "params.yaml")
    monkeypatch.setattr(paths, "ARTIFACTS", root / "artifacts")
    monkeypatch.setattr(paths, "STREAMS_DIR", root / "artifacts" / "streams")


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models train faster on one thread, and much faster when other processes load
    the machine (two spinning OpenMP threads then fight for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def tiny_root(tmp_path, monkeypatch) -> Path:
    root = make_root(tmp_path / "repo")
    point_paths_at(monkeypatch, root)
    return root


def run(**kwargs):
    from bytechat.train import train

    return train("tiny", device="cpu", quiet=True, **kwargs)


def test_train_writes_checkpoints_and_dvclive_metrics(tiny_root):
    result = run()
    assert result.step == 12 and result.resumed_from is None
    ckdir = paths.checkpoints_dir("tiny")
    assert {p.name for p in ckdir.iterdir()} == {"last.pt", "last.prev.pt", "best.pt"}
    last = ckpt_io.load_checkpoint(ckdir / "last.pt")
    assert last["step"] == 12 and ckpt_io.load_checkpoint(ckdir / "last.prev.pt")["step"] == 8
    assert last["best_val_loss"] == pytest.approx(min(last["val_loss"], last["best_val_loss"]))
    assert set(last["data"]["streams"]) == {f"{s}_{p}" for s in ("wiki", "roam", "primer") for p in ("train", "val")}

    live = paths.run_dir("tiny") / "live"
    metrics = json.loads((live / "metrics.json").read_text())
    assert metrics["step"] == 12
    assert {"loss"} <= set(metrics["train"]) and {"wiki", "roam", "primer", "loss"} <= set(metrics["val"])
    plots = live / "plots" / "metrics"
    train_rows = (plots / "train" / "loss.tsv").read_text().split()
    assert train_rows[:2] == ["step", "loss"] and train_rows[-2] == "12"
    val_steps = [line.split("\t")[0] for line in (plots / "val" / "loss.tsv").read_text().splitlines()[1:]]
    assert val_steps == ["6", "12"]
    assert not (tiny_root / "dvc.yaml").exists()  # dvcyaml=None: dvclive writes no dvc.yaml


def test_loss_goes_down(tiny_root):
    first = run(steps=1)
    assert first.train_loss > 5.0  # ~ln 256 = 5.55 at init
    result = run(steps=60)  # other steps: a different run, started fresh
    assert result.resumed_from is None
    assert result.val_loss < 3.5


def test_already_trained_run_returns_without_training(tiny_root, capsys):
    run()
    last = paths.checkpoints_dir("tiny") / "last.pt"
    before = last.stat().st_mtime_ns
    result = run()
    assert result.step == 12 and result.resumed_from == 12
    assert last.stat().st_mtime_ns == before


def test_changed_config_moves_old_checkpoints_and_starts_fresh(tiny_root, capsys):
    from bytechat.train import main

    assert main(["--profile", "tiny", "--device", "cpu"]) == 0
    write_params(tiny_root, lr=0.001)
    capsys.readouterr()
    assert main(["--profile", "tiny", "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "train_config.lr: 0.003 -> 0.001" in err and "starting fresh" in err
    stale = paths.run_dir("tiny") / "stale-12"
    assert {p.name for p in stale.iterdir()} == {"last.pt", "last.prev.pt", "best.pt"}
    assert ckpt_io.load_checkpoint(paths.checkpoints_dir("tiny") / "last.pt")["train_config"]["lr"] == 0.001


def test_changed_stream_is_a_different_run(tiny_root, capsys):
    run()
    write_stream(["different text " * 40], paths.stream_path("roam", "train"), "roam")
    result = run()
    assert result.resumed_from is None
    assert "data.streams.roam_train: " in capsys.readouterr().err


def test_resume_ignores_log_and_checkpoint_frequency(tiny_root):
    run(steps=8)
    write_params(tiny_root, log_every=1, checkpoint_every=3)
    result = run(steps=8)
    assert result.resumed_from == 8


def test_weight_decay_only_on_matrices():
    from bytechat.config import ModelConfig
    from bytechat.model import GPT
    from bytechat.train import build_optimizer

    model = GPT(ModelConfig(**TINY_MODEL))
    opt = build_optimizer(model, TrainConfig(weight_decay=0.1), torch.device("cpu"))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_peak_flops_from_env_or_measured(monkeypatch):
    from bytechat.train import PEAK_ENV, measure_peak_flops

    monkeypatch.setenv(PEAK_ENV, "1.5e11")
    assert measure_peak_flops(torch.device("cpu"), None) == 1.5e11
    monkeypatch.setenv(PEAK_ENV, "fast")
    with pytest.raises(ConfigError, match=PEAK_ENV):
        measure_peak_flops(torch.device("cpu"), None)
    monkeypatch.delenv(PEAK_ENV)
    assert measure_peak_flops(torch.device("cpu"), None, seconds=0.05) > 1e8


def test_eval_batches_are_fixed_and_leave_the_sampler_alone(tiny_root):
    from bytechat.train import Dist, eval_batches, open_data

    data = open_data({"wiki": 0.6, "roam": 0.3, "primer": 0.1}, 7)
    a = eval_batches(data.val, 4, 32, 2, 7, torch.device("cpu"), Dist())
    b = eval_batches(data.val, 4, 32, 2, 7, torch.device("cpu"), Dist())
    assert set(a) == {"wiki", "roam", "primer"}
    for source in a:
        for (xa, ya), (xb, yb) in zip(a[source], b[source]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_trim_live_history_drops_rows_after_the_checkpoint(tmp_path):
    from bytechat.train import trim_live_history

    tsv = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tloss\n2\t5.0\n4\t4.0\n6\t3.0\n8\t2.")  # last line cut by a kill
    trim_live_history(tmp_path, 4)
    assert tsv.read_text() == "step\tloss\n2\t5.0\n4\t4.0\n"


def test_bad_steps_and_profile_are_one_line_errors(tiny_root, capsys):
    from bytechat.train import main

    assert main(["--profile", "nope"]) == 2
    assert "profiles.nope: no such profile" in capsys.readouterr().err
    assert main(["--profile", "tiny", "--steps", "0"]) == 2
    assert "--steps: must be > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    """torchrun with 2 gloo processes trains the same model as 1 process (the same global
    batches; only the order of the gradient sums differs, so ~1e-7, not bit for bit)."""
    import os
    import subprocess
    import sys

    stage = Path(__file__).resolve().parent.parent / "stages" / "train.py"
    roots = {n: make_root(tmp_path / f"ranks{n}", steps=6, eval_every=6, checkpoint_every=6) for n in (1, 2)}
    commands = {
        1: [sys.executable, str(stage), "--profile", "tiny", "--device", "cpu"],
        2: [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(stage),
            "--profile", "tiny", "--device", "cpu"],
    }  # fmt: skip
    procs = {}
    for n, cmd in commands.items():
        env = {**os.environ, "BYTECHAT_ROOT": str(roots[n]), "OMP_NUM_THREADS": "1", "BYTECHAT_PEAK_FLOPS": "1e11"}
        procs[n] = subprocess.Popen(cmd, cwd=roots[n], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outputs = {n: p.communicate(timeout=120) for n, p in procs.items()}
    for n, p in procs.items():
        assert p.returncode == 0, outputs[n][1]
    assert outputs[2][0].count("tiny: 6 steps") == 1  # only rank 0 reports
    one, two = (ckpt_io.load_checkpoint(roots[n] / "artifacts/runs/tiny/checkpoints/last.pt") for n in (1, 2))
    assert one["step"] == two["step"] == 6
    for name, tensor in one["model"].items():
        torch.testing.assert_close(two["model"][name], tensor, rtol=1e-5, atol=1e-5)
    assert two["val_loss"] == pytest.approx(one["val_loss"], rel=1e-5)


def test_checkpoint_that_does_not_fit_the_model_starts_fresh(tiny_root, capsys):
    run()
    last = paths.checkpoints_dir("tiny") / "last.pt"
    ckpt = ckpt_io.load_checkpoint(last)
    ckpt["model"]["extra.weight"] = torch.zeros(2)  # as if the model code had changed
    ckpt_io.save_checkpoint(ckpt, last)
    result = run()
    assert result.resumed_from is None and result.step == 12
    assert "do not fit the current model code" in capsys.readouterr().err

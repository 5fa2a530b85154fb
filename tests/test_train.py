"""Training: outputs, metrics, optimizer groups, resume decisions. Tiny configs only
(2 layers x 32 wide, block 32); the kill-and-resume test is in test_resume.py."""

from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
import yaml

from bytechat.model import checkpoint as ckpt_io
from bytechat.core import paths
from bytechat.core.config import SOURCES, ConfigError, load_params
from bytechat.data.streams import write_stream
from tests.conftest import REPO
from tests.helpers import TINY_MODEL, train_config, write_params
from tests.helpers import train_tiny as run

pytestmark = pytest.mark.usefixtures("one_thread")


def test_train_writes_checkpoints_and_dvclive_metrics(tiny_root):
    result = run()
    assert result.step == 12 and result.resumed_from is None
    ckdir = paths.checkpoints_dir("tiny")
    assert {p.name for p in ckdir.iterdir()} == {"last.pt", "last.prev.pt", "best.pt"}
    last = ckpt_io.load_checkpoint(ckdir / "last.pt")
    assert last["step"] == 12 and ckpt_io.load_checkpoint(ckdir / "last.prev.pt")["step"] == 8
    assert last["best_val_loss"] == pytest.approx(min(last["val_loss"], last["best_val_loss"]))
    assert set(last["data"]["streams"]) == {f"{s}_{p}" for s in SOURCES for p in ("train", "val")}
    assert last["answer_style"] == load_params().grounded.answers  # what its replies are decoded as

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
    from bytechat.train.trainer import main

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
    from bytechat.core.config import ModelConfig
    from bytechat.model import GPT
    from bytechat.train.step import build_optimizer

    model = GPT(ModelConfig(**TINY_MODEL))
    opt = build_optimizer(model, train_config(weight_decay=0.1), torch.device("cpu"))
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest():
    from bytechat.core.config import ModelConfig
    from bytechat.model import GPT
    from bytechat.train.step import build_optimizer

    cfg = ModelConfig(**{**TINY_MODEL, "conv_kernel": 4, "copy_dim": 8, "qk_norm": True})
    model = GPT(cfg)
    opt = build_optimizer(model, train_config(optimizer="muon"), torch.device("cpu"))
    muon, adamw = opt.parts
    assert isinstance(muon, torch.optim.Muon) and isinstance(adamw, torch.optim.AdamW)
    in_muon = {id(p) for g in muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in adamw.param_groups for p in g["params"]}
    for name, p in model.named_parameters():
        hidden = p.dim() == 2 and name != "wte.weight" and "gate" not in name
        assert (id(p) in in_muon, id(p) in in_adamw) == (hidden, not hidden), name
    assert len(in_muon) == 4 * cfg.n_layer + 2  # qkv, proj, fc, mlp proj per block; copy query, key
    assert opt.param_groups == muon.param_groups + adamw.param_groups  # the lr schedule sets them all


def test_a_muon_run_resumes_exactly(tiny_root):
    """The Muon + AdamW state is checkpointed and restored: a run stopped midway and
    resumed ends with the weights of an uninterrupted one."""
    write_params(tiny_root, optimizer="muon")
    run()
    want = ckpt_io.load_checkpoint(paths.checkpoints_dir("tiny") / "last.pt")
    assert set(want["optimizer"]) == {"param_groups", "parts"}
    shutil.rmtree(paths.run_dir("tiny"))
    write_params(tiny_root, optimizer="muon", checkpoint_every=5)
    run()
    ckdir = paths.checkpoints_dir("tiny")
    os.replace(ckdir / "last.prev.pt", ckdir / "last.pt")  # as if killed after step 10
    assert run().resumed_from == 10
    got = ckpt_io.load_checkpoint(ckdir / "last.pt")
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), name


def test_peak_flops_from_env_or_measured(monkeypatch):
    from bytechat.train.log import PEAK_ENV, measure_peak_flops

    monkeypatch.setenv(PEAK_ENV, "1.5e11")
    assert measure_peak_flops(torch.device("cpu"), None) == 1.5e11
    monkeypatch.setenv(PEAK_ENV, "fast")
    with pytest.raises(ConfigError, match=PEAK_ENV):
        measure_peak_flops(torch.device("cpu"), None)
    monkeypatch.delenv(PEAK_ENV)
    assert measure_peak_flops(torch.device("cpu"), None, seconds=0.05) > 1e8


def test_eval_batches_are_fixed_and_leave_the_sampler_alone(tiny_root):
    from bytechat.core.config import load_params
    from bytechat.train.distributed import Dist
    from bytechat.train.data import eval_batches, open_data

    data = open_data(load_params().data, 0.25, 32)
    a = eval_batches(data.val, 4, 32, 2, 7, torch.device("cpu"), Dist())
    b = eval_batches(data.val, 4, 32, 2, 7, torch.device("cpu"), Dist())
    assert set(a) == set(SOURCES)
    for source in a:
        for (xa, ya), (xb, yb) in zip(a[source], b[source]):
            assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_trim_live_history_drops_rows_after_the_checkpoint(tmp_path):
    from bytechat.train.log import trim_live_history

    tsv = tmp_path / "plots" / "metrics" / "train" / "loss.tsv"
    tsv.parent.mkdir(parents=True)
    tsv.write_text("step\tloss\n2\t5.0\n4\t4.0\n6\t3.0\n8\t2.")  # last line cut by a kill
    trim_live_history(tmp_path, 4)
    assert tsv.read_text() == "step\tloss\n2\t5.0\n4\t4.0\n"


def test_bad_steps_and_profile_are_one_line_errors(tiny_root, capsys):
    from bytechat.train.trainer import main

    assert main(["--profile", "nope"]) == 2
    assert "profiles.nope: no such profile" in capsys.readouterr().err
    assert main(["--profile", "tiny", "--steps", "0"]) == 2
    assert "--steps: must be > 0" in capsys.readouterr().err


def test_checkpoint_that_does_not_fit_the_model_starts_fresh(tiny_root, capsys):
    run()
    last = paths.checkpoints_dir("tiny") / "last.pt"
    ckpt = ckpt_io.load_checkpoint(last)
    ckpt["model"]["extra.weight"] = torch.zeros(2)  # as if the model code had changed
    ckpt_io.save_checkpoint(ckpt, last)
    result = run()
    assert result.resumed_from is None and result.step == 12
    assert "do not fit the current model code" in capsys.readouterr().err


# ---------------------------------------------------------------- the chat phase


def test_chat_phase_is_the_last_fraction_of_the_steps():
    from bytechat.train.schedule import BASE, CHAT, chat_start, phase_at

    cfg = train_config(steps=1000, chat_fraction=0.25)
    assert chat_start(cfg) == 750
    assert [phase_at(s, cfg) for s in (0, 749, 750, 999)] == [BASE, BASE, CHAT, CHAT]
    assert chat_start(train_config(steps=1000, chat_fraction=0.0)) == 1000  # disabled
    assert chat_start(train_config(steps=12, chat_fraction=0.25)) == 9


def test_chat_phase_draws_by_p_chat_and_logs_the_phase(tiny_root, monkeypatch):
    import bytechat.train.trainer as train_module

    mixes = []
    real_get_batch = train_module.get_batch

    def recording_get_batch(streams, p, *args, **kwargs):
        if len(streams) > 1:  # not an eval batch (those draw from one source)
            mixes.append(dict(p))
        return real_get_batch(streams, p, *args, **kwargs)

    monkeypatch.setattr(train_module, "get_batch", recording_get_batch)
    run()
    p_train = {"wiki": 0.6, "roam": 0.3, "primer": 0.1, "grounded": 0.0}
    p_chat = {"wiki": 0.2, "roam": 0.2, "primer": 0.3, "grounded": 0.3}
    assert mixes == [p_train] * 2 * 9 + [p_chat] * 2 * 3  # 12 steps x grad_accum 2, the last 3 steps chat
    live = paths.run_dir("tiny") / "live"
    phase = (live / "plots" / "metrics" / "phase.tsv").read_text().split()
    assert phase[2:] == ["2", "0.0", "4", "0.0", "6", "0.0", "8", "0.0", "10", "1.0", "12", "1.0"]
    assert "phase: chat" in (live / "params.yaml").read_text()
    assert ckpt_io.load_checkpoint(paths.checkpoints_dir("tiny") / "last.pt")["data"]["p_chat"] == p_chat


def test_val_loss_is_half_language_half_chat(tiny_root):
    from bytechat.train.step import selection_loss

    result = run()
    p_train = {"wiki": 0.6, "roam": 0.3, "primer": 0.1, "grounded": 0.0}
    p_chat = {"wiki": 0.2, "roam": 0.2, "primer": 0.3, "grounded": 0.3}
    assert result.val_loss == pytest.approx(selection_loss(result.val_losses, p_train, p_chat))
    losses = result.val_losses
    language = (0.6 * losses["wiki"] + 0.3 * losses["roam"]) / 0.9
    chat = (0.3 * losses["primer"] + 0.3 * losses["grounded"]) / 0.6
    assert result.val_loss == pytest.approx((language + chat) / 2)


def test_selection_does_not_trade_language_for_cheaper_dialogue_templates():
    """A checkpoint whose grounded loss fell (templates learned) while its English got
    worse (overfitting) loses to the earlier one; the chat mix alone would pick it."""
    from bytechat.train.step import mixed_loss, selection_loss

    p_train = {"wiki": 0.784, "roam": 0.196, "primer": 0.02, "grounded": 0.0}
    p_chat = {"wiki": 0.15, "roam": 0.1, "primer": 0.25, "grounded": 0.5}
    earlier = {"wiki": 1.0, "roam": 1.0, "primer": 1.0, "grounded": 0.5}
    overfit = {"wiki": 1.3, "roam": 1.3, "primer": 1.0, "grounded": 0.3}
    assert mixed_loss(overfit, p_chat) < mixed_loss(earlier, p_chat)
    assert selection_loss(earlier, p_train, p_chat) < selection_loss(overfit, p_train, p_chat)


def test_changed_p_chat_is_a_different_run_unless_the_chat_phase_is_off(tiny_root, capsys):
    run()
    params = yaml.safe_load((tiny_root / "params.yaml").read_text())
    params["p_chat"] = {"wiki": 0.1, "roam": 0.1, "primer": 0.5, "grounded": 0.3}
    (tiny_root / "params.yaml").write_text(yaml.safe_dump(params))
    assert run().resumed_from is None
    assert "data.p_chat.primer: 0.3 -> 0.5" in capsys.readouterr().err

    params["profiles"]["tiny"]["train"]["chat_fraction"] = 0.0
    (tiny_root / "params.yaml").write_text(yaml.safe_dump(params))
    assert run().resumed_from is None  # chat_fraction changed
    params["p_chat"] = {"wiki": 0.3, "roam": 0.3, "primer": 0.4, "grounded": 0.0}
    (tiny_root / "params.yaml").write_text(yaml.safe_dump(params))
    assert run().resumed_from == 12  # p_chat draws nothing without a chat phase


def test_resume_across_the_phase_switch_is_exact(tiny_root):
    """A run stopped inside the base phase and resumed through the switch ends with the
    weights of an uninterrupted run: the phase is a function of the step."""
    run()
    want = ckpt_io.load_checkpoint(paths.checkpoints_dir("tiny") / "last.pt")
    shutil.rmtree(paths.run_dir("tiny"))
    write_params(tiny_root, checkpoint_every=8)
    run()
    ckdir = paths.checkpoints_dir("tiny")
    os.replace(ckdir / "last.prev.pt", ckdir / "last.pt")  # as if killed after step 8 (chat starts at 9)
    assert run().resumed_from == 8
    got = ckpt_io.load_checkpoint(ckdir / "last.pt")
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), name


# ---------------------------------------------------------------- the code fingerprint


def test_code_files_are_the_train_stage_code_deps_in_dvc_yaml():
    """CODE_FILES names what dvc re-runs the train stage for (besides the data and the
    stage script), so a resume notices every code change dvc does."""
    from bytechat.train.trainer import CODE_FILES, PACKAGE_DIR, code_fingerprint

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]["do"]
    deps = {dep for dep in stage["deps"] if dep.startswith("bytechat/")}
    as_deps = {f"bytechat/{pattern.removesuffix('/*.py')}" for pattern in CODE_FILES}
    assert as_deps == deps
    files = code_fingerprint()
    assert {"train/trainer.py", "train/schedule.py", "model/__init__.py", "model/checkpoint.py"} <= set(files)
    in_folders = {
        p.relative_to(PACKAGE_DIR).as_posix()
        for d in deps
        if not d.endswith(".py")
        for p in PACKAGE_DIR.glob(f"{d.removeprefix('bytechat/')}/*.py")
    }
    assert set(files) == in_folders | {p.removeprefix("bytechat/") for p in deps if p.endswith(".py")}


def test_code_fingerprint_follows_the_source(tmp_path):
    from bytechat.train.trainer import PACKAGE_DIR, code_fingerprint

    copy = tmp_path / "bytechat"
    shutil.copytree(PACKAGE_DIR, copy, ignore=shutil.ignore_patterns("__pycache__", "serve", "notes"))
    before = code_fingerprint(copy)
    assert before == code_fingerprint(PACKAGE_DIR)
    (copy / "eval" / "bpb.py").write_text("# not training code\n")
    assert code_fingerprint(copy) == before
    blocks = copy / "model" / "blocks.py"
    blocks.write_text(blocks.read_text() + "\n# an edit\n")
    after = code_fingerprint(copy)
    assert [name for name in before if after[name] != before[name]] == ["model/blocks.py"]


def test_changed_code_moves_old_checkpoints_and_starts_fresh(tiny_root, monkeypatch, capsys):
    import bytechat.train.trainer as train_module

    run()
    real = train_module.code_fingerprint()
    monkeypatch.setattr(train_module, "code_fingerprint", lambda: {**real, "model/blocks.py": "0" * 64})
    capsys.readouterr()
    result = run()
    assert result.resumed_from is None and result.step == 12
    err = capsys.readouterr().err
    assert "made with other settings or code (code.model/blocks.py: " in err and "starting fresh" in err
    stale = paths.run_dir("tiny") / "stale-12"
    assert {p.name for p in stale.iterdir()} == {"last.pt", "last.prev.pt", "best.pt"}
    assert ckpt_io.load_checkpoint(paths.checkpoints_dir("tiny") / "last.pt")["code"]["model/blocks.py"] == "0" * 64


def test_checkpoint_without_code_fingerprint_starts_fresh(tiny_root, capsys):
    run()
    last = paths.checkpoints_dir("tiny") / "last.pt"
    ckpt = ckpt_io.load_checkpoint(last)
    del ckpt["code"]  # written before the fingerprint existed
    ckpt_io.save_checkpoint(ckpt, last)
    assert run().resumed_from is None
    assert "code.train/trainer.py: '<absent>' -> " in capsys.readouterr().err


# ---------------------------------------------------------------- distributed settings


def test_collective_timeout_from_env(monkeypatch):
    from bytechat.train.distributed import DEFAULT_TIMEOUT_S, TIMEOUT_ENV, collective_timeout

    monkeypatch.delenv(TIMEOUT_ENV, raising=False)
    assert collective_timeout().total_seconds() == DEFAULT_TIMEOUT_S
    monkeypatch.setenv(TIMEOUT_ENV, "20")
    assert collective_timeout().total_seconds() == 20
    for bad in ("soon", "0", "-3", "inf"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(ConfigError, match=f"{TIMEOUT_ENV}: expected seconds > 0"):
            collective_timeout()


def test_lost_peer_errors_are_recognised():
    from bytechat.train.distributed import lost_peer

    assert lost_peer(torch.distributed.DistNetworkError("Connection reset by peer"))
    assert lost_peer(RuntimeError("[third_party/gloo/gloo/transport/tcp/pair.cc:537] Read error: Connection reset"))
    assert not lost_peer(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))

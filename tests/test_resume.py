"""Exact resume: a training process killed with SIGKILL (twice, at different moments) and
started again with the same command ends with the same weights, bit for bit, as one that
ran uninterrupted. Real processes, real kills, at exact steps: BYTECHAT_TEST_KILL_AFTER_STEP
makes the trainer SIGKILL itself once that step's logs and checkpoint are written, so the
test never races a busy machine for a narrow window."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from bytechat.core import paths
from bytechat.model.checkpoint import load_checkpoint
from tests.helpers import logged_step, make_root, write_params
from tests.helpers import train_tiny as run

pytestmark = pytest.mark.slow

SETTINGS = dict(steps=400, checkpoint_every=50, eval_every=100, log_every=1, dtype="bf16")


def start(root: Path, kill_after: int | None = None) -> subprocess.Popen:
    env = {**os.environ, "BYTECHAT_ROOT": str(root), "OMP_NUM_THREADS": "1", "BYTECHAT_PEAK_FLOPS": "1e11"}
    env.pop("BYTECHAT_TEST_KILL_AFTER_STEP", None)
    if kill_after is not None:
        env["BYTECHAT_TEST_KILL_AFTER_STEP"] = str(kill_after)
    cmd = [sys.executable, "-m", "bytechat.train.trainer", "--profile", "tiny", "--device", "cpu"]
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def killed(proc: subprocess.Popen) -> str:
    """Wait for a run that kills itself; its stderr."""
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -9, f"expected a SIGKILL, got exit {proc.returncode}:\n{err}"
    return err


def finish(proc: subprocess.Popen) -> str:
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    return err


def history(root: Path, name: str) -> str:
    return (root / "artifacts" / "runs" / "tiny" / "live" / "plots" / "metrics" / name).read_text()


def test_killed_and_restarted_run_matches_uninterrupted_run_bitwise(tmp_path):
    reference_root = make_root(tmp_path / "reference", **SETTINGS)
    killed_root = make_root(tmp_path / "killed", **SETTINGS)

    reference = start(reference_root)  # runs alongside the killed ones
    killed(start(killed_root, kill_after=130))  # 30 steps after the step-100 checkpoint are lost
    assert logged_step(killed_root) == 130
    err = killed(start(killed_root, kill_after=250))  # right after the step-250 checkpoint
    assert "resuming tiny from last.pt at step 100" in err
    assert logged_step(killed_root) == 250
    err = finish(start(killed_root))
    finish(reference)

    assert "resuming tiny from last.pt at step 250" in err
    ckpts = killed_root / "artifacts" / "runs" / "tiny" / "checkpoints"
    got = load_checkpoint(ckpts / "last.pt")
    want = load_checkpoint(reference_root / "artifacts" / "runs" / "tiny" / "checkpoints" / "last.pt")
    assert got["step"] == want["step"] == 400
    assert got["model"].keys() == want["model"].keys()
    for name in want["model"]:
        assert torch.equal(got["model"][name], want["model"][name]), name
    for index, state in want["optimizer"]["state"].items():
        for key, tensor in state.items():
            assert torch.equal(got["optimizer"]["state"][index][key], tensor), (index, key)
    assert got["best_val_loss"] == want["best_val_loss"]
    # The metric histories hold each step once, with the very same losses.
    for name in ("train/loss.tsv", "val/loss.tsv", "val/wiki/loss.tsv"):
        assert history(killed_root, name) == history(reference_root, name), name


def with_dropout(root: Path, p: float, **train_overrides) -> None:
    """root's params.yaml (profile "tiny", train_overrides) with model dropout p."""
    path = write_params(root, **train_overrides)
    params = yaml.safe_load(path.read_text(encoding="utf-8"))
    params["profiles"]["tiny"]["model"]["dropout"] = p
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


@pytest.mark.usefixtures("one_thread")
def test_a_run_with_dropout_resumes_exactly(tiny_root):
    """Dropout draws its masks from the global torch RNG (the train profile uses 0.35), so
    an exact resume needs the RNG states restored from the checkpoint: without them a
    resumed run draws other masks and ends with other weights."""
    with_dropout(tiny_root, 0.3)
    assert run().resumed_from is None
    ckdir = paths.checkpoints_dir("tiny")
    want = load_checkpoint(ckdir / "last.pt")
    assert want["model_config"]["dropout"] == 0.3 and want["step"] == 12
    shutil.rmtree(paths.run_dir("tiny"))
    with_dropout(tiny_root, 0.3, checkpoint_every=5)
    run()
    os.replace(ckdir / "last.prev.pt", ckdir / "last.pt")  # as if killed after step 10
    assert run().resumed_from == 10
    got = load_checkpoint(ckdir / "last.pt")
    assert got["step"] == 12
    for name, tensor in want["model"].items():
        assert torch.equal(got["model"][name], tensor), name

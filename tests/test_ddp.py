"""Training under torchrun with 2 gloo processes on the CPU, against 1 process: the same
global batches (so the same loss curve, within float tolerance: only the order of the
gradient sums differs), gradient accumulation with no_sync, rank-0-only outputs, resume
across world sizes in both directions, and a killed or hung rank ending the whole run.
psutil (a dependency of dvc) finds torchrun's workers."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch

from bytechat.model import checkpoint as ckpt_io
from tests.conftest import REPO
from tests.helpers import TINY_MODEL, logged_step, make_root

pytestmark = pytest.mark.slow

STAGE = REPO / "stages" / "train.py"
# grad_accum 2 over 2 ranks: each micro-step is 4 rows, 2 per rank, synced only on the
# second micro-step. A checkpoint at step 10 (last.prev.pt) is where the resumes start.
SETTINGS = dict(steps=20, batch_size=8, grad_accum=2, eval_every=10, checkpoint_every=10, log_every=1)
RUN = Path("artifacts/runs/tiny")


def start(root: Path, nproc: int, stderr=subprocess.PIPE, **env) -> subprocess.Popen:
    train = [str(STAGE), "--profile", "tiny", "--device", "cpu"]
    if nproc == 1:
        cmd = [sys.executable, *train]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *train]
    env = {**os.environ, "BYTECHAT_ROOT": str(root), "OMP_NUM_THREADS": "1", "BYTECHAT_PEAK_FLOPS": "1e11", **env}
    return subprocess.Popen(cmd, cwd=root, env=env, stdout=subprocess.PIPE, stderr=stderr, text=True)


def finish(proc: subprocess.Popen) -> tuple[str, str]:
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    return out, err


def checkpoint(root: Path, name: str = ckpt_io.LAST) -> dict:
    return ckpt_io.load_checkpoint(root / RUN / "checkpoints" / name)


def losses(root: Path, name: str) -> dict[int, float]:
    rows = (root / RUN / "live/plots/metrics" / name).read_text().splitlines()[1:]
    return {int(step): float(value) for step, value in (row.split("\t") for row in rows)}


def assert_same_weights(got: dict, want: dict) -> None:
    assert got["step"] == want["step"]
    assert got["model"].keys() == want["model"].keys()
    for name, tensor in want["model"].items():
        torch.testing.assert_close(got["model"][name], tensor, rtol=1e-4, atol=1e-5, msg=name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[int, tuple[Path, str, str]]:
    """An uninterrupted 20-step run on 1 process and on 2: {nproc: (root, stdout, stderr)}."""
    base = tmp_path_factory.mktemp("ddp")
    roots = {n: make_root(base / f"ranks{n}", **SETTINGS) for n in (1, 2)}
    procs = {n: start(root, n) for n, root in roots.items()}  # side by side: 3 workers, 2 cores
    return {n: (roots[n], *finish(proc)) for n, proc in procs.items()}


def test_two_processes_follow_one_process(runs):
    (one, _, _), (two, _, _) = runs[1], runs[2]
    for name in ("train/loss.tsv", "val/loss.tsv", "val/primer/loss.tsv"):
        curve_one, curve_two = losses(one, name), losses(two, name)
        assert curve_one.keys() == curve_two.keys(), name
        for step, value in curve_one.items():
            assert curve_two[step] == pytest.approx(value, rel=1e-4), (name, step)
    assert sorted(losses(two, "train/loss.tsv")) == list(range(1, 21))
    assert_same_weights(checkpoint(two), checkpoint(one))
    assert checkpoint(two)["val_loss"] == pytest.approx(checkpoint(one)["val_loss"], rel=1e-4)
    assert checkpoint(two)["data"] == checkpoint(one)["data"]  # the fingerprint ignores the world size


def test_only_rank_0_reports_and_writes(runs):
    root, out, err = runs[2]
    assert out.count("tiny: 20 steps") == 1
    assert err.count("step 10: val ") == 1 and err.count("step 0: base phase") == 1
    assert sorted(p.name for p in (root / RUN / "checkpoints").iterdir()) == ["best.pt", "last.prev.pt", "last.pt"]
    rows = (root / RUN / "live/plots/metrics/train/loss.tsv").read_text().splitlines()
    assert len(rows) == 1 + 20  # one writer: each step logged once
    assert not list(root.rglob("*.tmp"))


def test_weights_trained_under_ddp_load_in_one_process(runs):
    from bytechat.core.config import ModelConfig
    from bytechat.model.export import load_model
    from bytechat.model import GPT

    root = runs[2][0]
    saved = checkpoint(root)["model"]
    assert not [name for name in saved if name.startswith(("module.", "_orig_mod."))]
    assert saved.keys() == GPT(ModelConfig(**TINY_MODEL)).state_dict().keys()
    model, info = load_model(root / RUN / "checkpoints", device="cpu")
    assert info["step"] == 20 and model(torch.zeros(1, 8, dtype=torch.long))[0].shape == (1, 8, 256)


@pytest.mark.parametrize("written_by, resumed_by", [(2, 1), (1, 2)], ids=["2-to-1", "1-to-2"])
def test_resume_across_world_sizes_matches_the_uninterrupted_run(runs, tmp_path, written_by, resumed_by):
    """Step 10's checkpoint of an n-process run, resumed on m processes, ends where the
    uninterrupted runs end."""
    root = make_root(tmp_path / "resumed", **SETTINGS)
    (root / RUN / "checkpoints").mkdir(parents=True)
    shutil.copy(runs[written_by][0] / RUN / "checkpoints" / ckpt_io.PREVIOUS, root / RUN / "checkpoints" / ckpt_io.LAST)
    out, err = finish(start(root, resumed_by))
    assert err.count("resuming tiny from last.pt at step 10") == 1
    assert out.count("tiny: 20 steps") == 1
    for n in (1, 2):
        assert_same_weights(checkpoint(root), checkpoint(runs[n][0]))
    after = losses(root, "train/loss.tsv")
    assert sorted(after) == list(range(11, 21))
    for step, value in after.items():
        assert value == pytest.approx(losses(runs[1][0], "train/loss.tsv")[step], rel=1e-4), step


def workers(torchrun: subprocess.Popen, n: int, timeout: float = 30) -> dict[int, psutil.Process]:
    """torchrun's worker processes by RANK, once all n have started."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = {}
        for child in psutil.Process(torchrun.pid).children():
            with contextlib.suppress(psutil.Error, KeyError):
                found[int(child.environ()["RANK"])] = child
        if len(found) == n:
            return found
        time.sleep(0.05)
    raise AssertionError(f"torchrun did not start {n} workers within {timeout} s")


def wait_for_training(proc: subprocess.Popen, root: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while logged_step(root) < 3:  # training, with every collective in use
        assert proc.poll() is None and time.monotonic() < deadline, "no training step logged"
        time.sleep(0.02)


def end_all(proc: subprocess.Popen, ranks: dict[int, psutil.Process]) -> None:
    """Whatever a test left running: torchrun and its workers (SIGKILL on torchrun alone
    would leave the workers training on, orphaned, for the rest of the suite)."""
    with contextlib.suppress(psutil.Error):
        ranks = {**dict(enumerate(psutil.Process(proc.pid).children(recursive=True), start=len(ranks))), **ranks}
    for rank in ranks.values():
        with contextlib.suppress(psutil.Error):
            rank.send_signal(signal.SIGCONT)
            rank.kill()
    if proc.poll() is None:
        proc.kill()
        proc.wait(timeout=30)


def test_a_killed_rank_ends_the_run_with_an_error(tmp_path):
    root = make_root(tmp_path / "killed", **{**SETTINGS, "steps": 100_000, "eval_every": 1000})
    proc = start(root, 2)
    ranks: dict[int, psutil.Process] = {}
    try:
        ranks = workers(proc, 2)
        wait_for_training(proc, root)
        killed = time.monotonic()
        ranks[1].send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            end_all(proc, ranks)
    assert proc.returncode != 0
    assert time.monotonic() - killed < 60
    assert "FAILED" in err and "rank      : 1" in err and "Signal 9 (SIGKILL)" in err  # torchrun's summary
    assert not ranks[0].is_running()


def test_a_hung_rank_times_out_with_a_clear_error(tmp_path):
    """A rank that stops answering without dying (SIGSTOP: torchrun still sees it alive)
    makes the others fail once a collective waits BYTECHAT_DIST_TIMEOUT_S."""
    root = make_root(tmp_path / "hung", **{**SETTINGS, "steps": 100_000, "eval_every": 1000})
    log = tmp_path / "stderr.txt"
    with open(log, "w") as err:
        proc = start(root, 2, stderr=err, BYTECHAT_DIST_TIMEOUT_S="3")
    ranks: dict[int, psutil.Process] = {}
    try:
        ranks = workers(proc, 2)
        wait_for_training(proc, root)
        ranks[1].send_signal(signal.SIGSTOP)
        stopped, message = time.monotonic(), "bytechat.train.trainer: error: rank 0: lost contact with another rank"
        while message not in log.read_text():
            assert time.monotonic() - stopped < 30, log.read_text()[-2000:]
            time.sleep(0.1)
        ranks[1].send_signal(signal.SIGCONT)  # lets torchrun's SIGTERM end it now, not after its 30 s grace
        proc.wait(timeout=30)
    finally:
        for rank in ranks.values():
            with contextlib.suppress(psutil.Error):
                rank.send_signal(signal.SIGCONT)
        if proc.poll() is None:
            end_all(proc, ranks)
    assert proc.returncode != 0
    assert "Timed out" in log.read_text()


AGREE = """
import sys, torch
from bytechat.core.config import ConfigError
from bytechat.train.distributed import Dist
dist = Dist.from_env()
dist.start(torch.device("cpu"))
try:
    dist.agree({"streams": {"wiki_train": "same", "roam_train": "abc"[: 2 + dist.rank]}}, "data")
except ConfigError as exc:
    print(exc)
    sys.exit(2)
"""


def test_ranks_with_other_streams_stop_with_one_message(tmp_path):
    """On several machines each has its own streams: every rank stops, naming the difference."""
    script = tmp_path / "agree.py"
    script.write_text(AGREE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode != 0
    message = "rank 1: data differs from rank 0's (data.streams.roam_train: 'ab' -> 'abc'); every machine needs"
    assert done.stdout.count(message) >= 1, done.stdout + done.stderr


def test_grad_sync_skips_all_but_the_last_micro_step():
    """Under DDP the first grad_accum - 1 micro-steps run in no_sync (no all-reduce)."""
    from bytechat.train.distributed import Dist
    from bytechat.train.trainer import Trainer

    class FakeDDP:
        def no_sync(self):
            return "no_sync"

    trainer = Trainer.__new__(Trainer)
    trainer.dist, trainer.forward = Dist(rank=0, world_size=2), FakeDDP()
    assert trainer.grad_sync(last=False) == "no_sync"
    assert trainer.grad_sync(last=True) != "no_sync"
    trainer.dist = Dist()
    assert trainer.grad_sync(last=False) != "no_sync"

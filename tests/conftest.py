"""Shared test set-up: offline Hugging Face, one torch thread, and the shared fixtures
(helpers that are plain functions live in tests/helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the Hub is unreachable here; fail fast
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread per process: on a 2-core machine, two torch threads competing with another
# process (a subprocess under test, a DDP peer) run ~10x slower than one.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("BYTECHAT_COMPILE", "0")  # chat and serve compile their decode step (~30 s) unless told not to

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(1)

from tests.helpers import REPO, make_root  # noqa: E402

SHARED_WIKITEXT = (REPO.parent / "shared" / "data" / "wikitext-2-dev").resolve()


@pytest.fixture
def shared_wikitext() -> Path:
    if not SHARED_WIKITEXT.is_dir():
        pytest.skip(f"{SHARED_WIKITEXT} is absent (the shared WikiText-2 dev copy)")
    return SHARED_WIKITEXT


@pytest.fixture
def tiny_root(tmp_path, monkeypatch) -> Path:
    """A whole run isolated under one root: params.yaml (profile "tiny") and tiny streams;
    BYTECHAT_ROOT points every bytechat.core.paths path (and subprocesses) at it."""
    root = make_root(tmp_path / "repo")
    monkeypatch.setenv("BYTECHAT_ROOT", str(root))
    return root


@pytest.fixture
def one_thread():
    """Tiny models train faster on one thread, and much faster when other processes load
    the machine (two spinning OpenMP threads then fight for the cores)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

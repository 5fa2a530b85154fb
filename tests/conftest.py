"""Shared test set-up: offline Hugging Face, and helpers to write small inputs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the Hub is unreachable here; fail fast
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# One thread per process: on a 2-core machine, two torch threads competing with another
# process (a subprocess under test, a DDP peer) run ~10x slower than one.
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402  (after OMP_NUM_THREADS)

torch.set_num_threads(1)

REPO = Path(__file__).resolve().parent.parent
SHARED_WIKITEXT = (REPO.parent / "shared" / "data" / "wikitext-2-dev").resolve()


@pytest.fixture
def shared_wikitext() -> Path:
    if not SHARED_WIKITEXT.is_dir():
        pytest.skip(f"{SHARED_WIKITEXT} is absent (the shared WikiText-2 dev copy)")
    return SHARED_WIKITEXT

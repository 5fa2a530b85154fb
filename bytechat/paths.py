"""One home for every standard path of the project.

Everything is relative to the repository root (the folder holding params.yaml), so
stage scripts, tests and the CLI agree wherever they are started from. The root can be
overridden with BYTECHAT_ROOT (tests point it at a temporary copy).
"""

from __future__ import annotations

import os
from pathlib import Path


def repo_root() -> Path:
    env = os.environ.get("BYTECHAT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params.yaml").is_file():
            return candidate
    return Path(__file__).resolve().parent.parent


ROOT = repo_root()
PARAMS = ROOT / "params.yaml"

# Inputs.
ROAM_DIR = ROOT / ".roam-data"  # the user's private Roam export (git-ignored)
EXAMPLE_ROAM_DIR = ROOT / "examples" / "roam"  # shipped fallback graph
PRIMER = ROOT / "data" / "primer.txt"

# Pipeline outputs (git-ignored).
ARTIFACTS = ROOT / "artifacts"
WIKITEXT_DIR = ARTIFACTS / "wikitext"  # download stage: {train,validation,test}.txt + source.json
SPLITS_DIR = ARTIFACTS / "splits"  # split stage: roam/primer train/val documents
STREAMS_DIR = ARTIFACTS / "streams"  # streams stage: *.bin + *.json sidecars
BENCH_DIR = ARTIFACTS / "bench"
NOTES_DIR = ARTIFACTS / "notes"  # index stage: the notes index for chat + summary.json
NOTES_INDEX = NOTES_DIR / "index.sqlite"
NOTES_SUMMARY = NOTES_DIR / "summary.json"
GROUNDED_DIR = ARTIFACTS / "grounded"  # grounded stage: {train,val}.jsonl dialogues + summary.json


def run_dir(profile: str) -> Path:
    """Where a training profile keeps its checkpoints, metrics and plots."""
    return ARTIFACTS / "runs" / profile


def checkpoints_dir(profile: str) -> Path:
    return run_dir(profile) / "checkpoints"


def export_dir(profile: str) -> Path:
    return ARTIFACTS / "export" / profile


def stream_path(source: str, split: str) -> Path:
    """The byte stream of one source ("wiki", "roam", "primer", "grounded") and split."""
    return STREAMS_DIR / f"{source}_{split}.bin"

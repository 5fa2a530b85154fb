"""One home for every standard path of the project, computed when asked for.

Everything is relative to the repository root (the folder holding params.yaml), so
stage scripts, tests and the CLI agree wherever they are started from. BYTECHAT_ROOT
overrides the root; it is read at every call, so a test that sets it (monkeypatch.setenv)
moves every path of a whole run, in this process and in the processes it starts.
"""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """$BYTECHAT_ROOT, else the nearest folder holding params.yaml from the working
    directory up, else the folder above this package."""
    env = os.environ.get("BYTECHAT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for candidate in (here, *here.parents):
        if (candidate / "params.yaml").is_file():
            return candidate
    return Path(__file__).resolve().parents[2]


def params_file() -> Path:
    return root() / "params.yaml"


# Inputs.
def roam_dir() -> Path:
    """The user's private Roam export (git-ignored)."""
    return root() / ".roam-data"


def example_roam_dir() -> Path:
    """The shipped fallback graph."""
    return root() / "examples" / "roam"


def primer_file() -> Path:
    return root() / "data" / "primer.txt"


def unseen_notes_dir() -> Path:
    """Hand-written notes and questions no model trains on (eval)."""
    return root() / "data" / "unseen-notes"


# Pipeline outputs (git-ignored).
def artifacts() -> Path:
    return root() / "artifacts"


def wikitext_dir() -> Path:
    """download stage: {train,validation,test}.txt + source.json"""
    return artifacts() / "wikitext"


def splits_dir() -> Path:
    """split stage: roam/primer train/val documents + manifest.json"""
    return artifacts() / "splits"


def streams_dir() -> Path:
    """streams stage: *.bin + *.json sidecars"""
    return artifacts() / "streams"


def bench_dir() -> Path:
    return artifacts() / "bench"


def notes_dir() -> Path:
    """index stage: the notes index for chat + summary.json"""
    return artifacts() / "notes"


def notes_index() -> Path:
    return notes_dir() / "index.sqlite"


def notes_summary() -> Path:
    return notes_dir() / "summary.json"


def grounded_dir() -> Path:
    """grounded stage: {train,val}.jsonl dialogues + summary.json"""
    return artifacts() / "grounded"


def run_dir(profile: str) -> Path:
    """Where a training profile keeps its checkpoints, metrics and plots."""
    return artifacts() / "runs" / profile


def checkpoints_dir(profile: str) -> Path:
    return run_dir(profile) / "checkpoints"


def export_root() -> Path:
    return artifacts() / "export"


def export_dir(profile: str) -> Path:
    return export_root() / profile


def eval_dir(profile: str) -> Path:
    return artifacts() / "eval" / profile


def stream_path(source: str, split: str) -> Path:
    """The byte stream of one source ("wiki", "roam", "primer", "grounded") and split."""
    return streams_dir() / f"{source}_{split}.bin"


def spans_path(source: str, split: str) -> Path:
    """The answer spans of a dialogue stream: (reply, first, last) byte offsets, int64 (N, 3)."""
    return streams_dir() / f"{source}_{split}.spans.npy"


# The former module constants (paths.ROOT, paths.SPLITS_DIR, ...), for code not moved to the
# functions yet: each is computed when read, like the function it names.
_CONSTANTS = {
    "ROOT": root,
    "PARAMS": params_file,
    "ROAM_DIR": roam_dir,
    "EXAMPLE_ROAM_DIR": example_roam_dir,
    "PRIMER": primer_file,
    "ARTIFACTS": artifacts,
    "WIKITEXT_DIR": wikitext_dir,
    "SPLITS_DIR": splits_dir,
    "STREAMS_DIR": streams_dir,
    "BENCH_DIR": bench_dir,
    "NOTES_DIR": notes_dir,
    "NOTES_INDEX": notes_index,
    "NOTES_SUMMARY": notes_summary,
    "GROUNDED_DIR": grounded_dir,
}


def __getattr__(name: str) -> Path:
    if name in _CONSTANTS:
        return _CONSTANTS[name]()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

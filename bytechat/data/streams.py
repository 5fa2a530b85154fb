"""Byte streams: each split as a flat uint8 file read with np.memmap, plus a JSON sidecar.

Documents are joined by "\\n\\n". Writing is incremental (one document at a time, hashed
on the way) into a temp file that is renamed at the end, so memory stays flat in corpus
size and a killed stage never leaves a half file behind.

The .bin and its sidecar change together, so a kill leaves the old pair or the new pair,
never a new stream with an old sha256 (which resume would trust):

    1. the stream goes to .<name>.bin.pending, the sidecar to .<name>.json.pending
       (each written to a temp file and renamed, so each is whole once it exists);
    2. the pending sidecar existing is the commit point: the pair is then renamed into
       place, stream first. A kill before it leaves the old pair (the orphaned pending
       stream is removed by the next write); a kill after it is rolled forward by the
       next read_meta / open_stream / write_stream (finish_pending).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from bytechat.core.atomic import atomic_open, write_json

SEPARATOR = b"\n\n"
_CHUNK = 1 << 20  # buffer ~1 MiB before hitting the file


class StreamError(ValueError):
    pass


def sidecar_path(bin_path: str | Path) -> Path:
    return Path(bin_path).with_suffix(".json")


def _pending(path: Path) -> Path:
    return path.with_name(f".{path.name}.pending")


def finish_pending(bin_path: str | Path) -> None:
    """Complete a committed write that was killed before both renames were done."""
    bin_path = Path(bin_path)
    if not _pending(sidecar_path(bin_path)).exists():
        return
    for path in (bin_path, sidecar_path(bin_path)):  # the sidecar last: it is the marker
        with contextlib.suppress(FileNotFoundError):  # already moved (or by a concurrent reader)
            os.replace(_pending(path), path)


def write_stream(documents: Iterable[str | bytes], bin_path: str | Path, source: str) -> dict:
    """Write documents as one byte stream; return the sidecar metadata (also written)."""
    bin_path = Path(bin_path)
    finish_pending(bin_path)  # so an earlier committed write is not half undone below
    # Leftovers of a killed write: an uncommitted pending stream, and temp files.
    for path in (_pending(bin_path), _pending(sidecar_path(bin_path))):
        for leftover in (path, *path.parent.glob(f".{glob.escape(path.name)}.*.tmp")):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(leftover)
    digest = hashlib.sha256()
    n_bytes = n_docs = 0
    pending: list[bytes] = []
    pending_size = 0
    with atomic_open(_pending(bin_path), "wb") as fh:
        for doc in documents:
            data = doc.encode("utf-8") if isinstance(doc, str) else bytes(doc)
            if n_docs:
                pending.append(SEPARATOR)
                pending_size += len(SEPARATOR)
            pending.append(data)
            pending_size += len(data)
            n_docs += 1
            if pending_size >= _CHUNK:
                chunk = b"".join(pending)
                fh.write(chunk)
                digest.update(chunk)
                n_bytes += len(chunk)
                pending, pending_size = [], 0
        chunk = b"".join(pending)
        fh.write(chunk)
        digest.update(chunk)
        n_bytes += len(chunk)
    meta = {"bytes": n_bytes, "documents": n_docs, "sha256": digest.hexdigest(), "source": source}
    try:
        write_json(_pending(sidecar_path(bin_path)), meta)  # the commit point
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_pending(bin_path))
        raise
    finish_pending(bin_path)
    return meta


def read_meta(bin_path: str | Path) -> dict:
    finish_pending(bin_path)
    path = sidecar_path(bin_path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StreamError(f"{path}: sidecar missing (run `dvc repro streams`)") from None
    except json.JSONDecodeError as exc:
        raise StreamError(f"{path}: not valid JSON ({exc})") from None


def open_spans(path: str | Path) -> np.ndarray:
    """A dialogue stream's answer spans (stages/streams.py): int64 (N, 3) rows of (reply,
    first, last) byte offsets, sorted by reply, each span before its reply."""
    path = Path(path)
    try:
        spans = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise StreamError(f"{path}: unreadable answer spans ({exc}; run `dvc repro streams`)") from None
    if spans.dtype != np.int64 or spans.ndim != 2 or spans.shape[1] != 3:
        raise StreamError(f"{path}: answer spans must be int64 rows of 3, got {spans.dtype} {spans.shape}")
    if len(spans) and not ((spans[:, 1] <= spans[:, 2]).all() and (spans[:, 2] < spans[:, 0]).all()):
        raise StreamError(f"{path}: an answer span does not end before its reply")
    if (np.diff(spans[:, 0]) < 0).any():
        raise StreamError(f"{path}: answer spans are not sorted by reply")
    return spans


def open_stream(bin_path: str | Path) -> np.ndarray:
    """The stream as a read-only uint8 memmap (nothing is loaded into RAM up front)."""
    bin_path = Path(bin_path)
    finish_pending(bin_path)
    if not bin_path.is_file():
        raise StreamError(f"{bin_path}: stream missing (run `dvc repro streams`)")
    if bin_path.stat().st_size == 0:
        raise StreamError(f"{bin_path}: stream is empty")
    return np.memmap(bin_path, dtype=np.uint8, mode="r")

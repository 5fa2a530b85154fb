"""Stage `streams`: every split as a uint8 byte stream (artifacts/streams/<source>_<split>.bin)
plus a JSON sidecar. Documents are read one at a time, so memory stays flat.

Beside each grounded stream, <source>_<split>.spans.npy: the answer spans of its dialogues
(Dialogue.answer_span) as byte offsets in the stream, what the span head trains on."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Iterator

from tqdm import tqdm

import numpy as np

from bytechat.core import paths
from bytechat.core.atomic import atomic_open
from bytechat.data.wikitext import wikitext_articles
from bytechat.data.streams import SEPARATOR, write_stream


def jsonl_texts(path: Path) -> Iterator[str]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            yield json.loads(line)["text"]


class Spans:
    """The texts of a grounded jsonl, one at a time, gathering each one's answer span as a
    byte offset in the stream they are joined into (documents joined by SEPARATOR)."""

    def __init__(self, path: Path) -> None:
        self.path, self.rows = path, []

    def __iter__(self) -> Iterator[str]:
        at = 0
        with open(self.path, encoding="utf-8") as fh:
            for line in fh:
                record = json.loads(line)
                if record.get("span"):
                    self.rows.append([at + int(v) for v in record["span"]])
                at += len(record["text"].encode("utf-8")) + len(SEPARATOR)
                yield record["text"]

    def save(self, path: Path) -> None:
        """Write the spans as an int64 (N, 3) .npy (temp file, then rename)."""
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(self.rows, dtype=np.int64).reshape(-1, 3))
        with atomic_open(path, "wb") as fh:
            fh.write(buffer.getvalue())


def read_upstream(path: Path) -> dict:
    """A JSON file an earlier stage wrote; missing or broken is one clear line."""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SystemExit(f"error: {path}: missing (run `dvc repro download split` first)") from None
    except json.JSONDecodeError as exc:
        raise SystemExit(f"error: {path}: not valid JSON ({exc})") from None


def main() -> int:
    wiki_source = read_upstream(paths.wikitext_dir() / "source.json")
    manifest = read_upstream(paths.splits_dir() / "manifest.json")
    wiki_label = wiki_source.get("path") or wiki_source.get("dataset") or wiki_source.get("corpus")
    jobs = [
        (
            "wiki",
            "train",
            wikitext_articles(paths.wikitext_dir() / "train.txt"),
            f"wikitext ({wiki_source['kind']}: {wiki_label})",
        ),
        (
            "wiki",
            "val",
            wikitext_articles(paths.wikitext_dir() / "validation.txt"),
            f"wikitext ({wiki_source['kind']}: {wiki_label})",
        ),
        (
            "wiki",
            "test",
            wikitext_articles(paths.wikitext_dir() / "test.txt"),
            f"wikitext ({wiki_source['kind']}: {wiki_label})",
        ),
    ]
    for source in ("roam", "primer"):
        origin = manifest["roam"]["dir"] if source == "roam" else manifest["primer"]["file"]
        for split in ("train", "val"):
            jobs.append((source, split, jsonl_texts(paths.splits_dir() / f"{source}_{split}.jsonl"), origin))
    for split in ("train", "val"):
        grounded = paths.grounded_dir() / f"{split}.jsonl"
        if not grounded.is_file():
            print(f"error: {grounded}: missing (run `dvc repro grounded` first)", file=sys.stderr)
            return 1
        jobs.append(("grounded", split, Spans(grounded), "grounded dialogues (stages/grounded.py)"))
    for source, split, docs, origin in tqdm(jobs, desc="streams", unit=" stream"):
        meta = write_stream(docs, paths.stream_path(source, split), origin)
        if isinstance(docs, Spans):
            docs.save(paths.spans_path(source, split))
            tqdm.write(f"{source}_{split}: {len(docs.rows):>10,} answer spans")
        tqdm.write(f"{source}_{split}: {meta['bytes']:>10,} bytes, {meta['documents']:>6,} documents  <- {origin}")
        if meta["bytes"] == 0:
            print(f"error: {source}_{split} is empty (from {origin})", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""WikiText through the `datasets` library, from the Hub, a local copy or an offline corpus.

Sources (params.yaml `data.wikitext_source`):
  auto     the Hub if it answers within `hub_timeout_s`, else the offline corpus (loudly)
  hub      the Hub only (`Salesforce/wikitext`, config `data.wikitext_config`)
  offline  the offline corpus only
  <path>   a local folder: the Hub's parquet layout ({split}-*.parquet, one `text` column,
           one row per raw line) or the original wiki.{train,valid,test}.raw files

The offline corpus is English prose that needs no network and ships with every Python:
the help topics of the language reference (`pydoc_data.topics`), split by topic with a
fixed hash so the split never changes. It is not WikiText and the recorded source says so.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.request
from pathlib import Path
from typing import Iterator

SPLITS = ("train", "validation", "test")
HUB_DATASET = "Salesforce/wikitext"
_RAW_NAMES = {"train": "wiki.train.raw", "validation": "wiki.valid.raw", "test": "wiki.test.raw"}


# A WikiText article starts at a top-level heading line " = Title = ".
_ARTICLE_HEADING = re.compile(r"^ = [^=].* = $")


def wikitext_articles(path: Path) -> Iterator[str]:
    """Articles of a WikiText split file, one at a time, surrounding blank lines dropped."""
    lines: list[str] = []
    with open(path, encoding="utf-8", newline="") as fh:
        for line in fh:
            if _ARTICLE_HEADING.match(line.rstrip("\n")) and any(l.strip() for l in lines):
                yield "".join(lines).strip("\n")
                lines = []
            lines.append(line)
    if any(l.strip() for l in lines):
        yield "".join(lines).strip("\n")


class WikiTextError(ValueError):
    pass


class WikiTextSplits(dict):
    """{"train", "validation", "test"} -> list of rows, plus `.source`: where they came from."""

    def __init__(self, splits: dict[str, list[str]], source: dict):
        super().__init__(splits)
        self.source = source


def load_wikitext(
    source: str = "auto", config: str = "wikitext-2-raw-v1", hub_timeout_s: float = 5.0
) -> WikiTextSplits:
    """Load the three splits as lists of strings (raw lines, each with its newline)."""
    datasets, info = open_wikitext(source, config, hub_timeout_s)
    return WikiTextSplits({split: list(iter_rows(datasets[split])) for split in SPLITS}, info)


def open_wikitext(source: str, config: str, hub_timeout_s: float = 5.0):
    """(DatasetDict-like mapping split -> datasets.Dataset, source info). Rows stay on disk."""
    if source == "auto":
        if hub_reachable(hub_timeout_s):
            return _from_hub(config)
        offline = _truthy(os.environ.get("HF_DATASETS_OFFLINE")) or _truthy(os.environ.get("HF_HUB_OFFLINE"))
        _warn_offline(
            "HF_DATASETS_OFFLINE/HF_HUB_OFFLINE is set"
            if offline
            else f"the Hugging Face Hub did not answer within {hub_timeout_s:g} s"
        )
        return _offline_corpus()
    if source == "hub":
        return _from_hub(config)
    if source == "offline":
        _warn_offline("data.wikitext_source is 'offline'")
        return _offline_corpus()
    return _from_local(Path(source))


def iter_rows(dataset, batch_size: int = 4096) -> Iterator[str]:
    """Rows of one split, read in batches so a large corpus never sits in memory whole."""
    for batch in dataset.iter(batch_size=batch_size):
        yield from batch["text"]


def hub_reachable(timeout_s: float) -> bool:
    if _truthy(os.environ.get("HF_DATASETS_OFFLINE")) or _truthy(os.environ.get("HF_HUB_OFFLINE")):
        return False
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")
    try:
        with urllib.request.urlopen(f"{endpoint}/api/datasets/{HUB_DATASET}", timeout=timeout_s) as resp:
            return resp.status == 200
    except Exception:  # DNS failure, refused, timeout, HTTP error: all mean "not usable now"
        return False


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _from_hub(config: str):
    import datasets

    try:
        ds = datasets.load_dataset(HUB_DATASET, config)
    except Exception as exc:
        raise WikiTextError(
            f"data.wikitext_source: could not load {HUB_DATASET}/{config} from the Hub ({exc})"
        ) from None
    return ds, {"kind": "hub", "dataset": HUB_DATASET, "config": config}


def _from_local(root: Path):
    import datasets

    if not root.is_dir():
        raise WikiTextError(f"data.wikitext_source: {root} is not a folder (nor auto, hub or offline)")
    parquet = {split: sorted(root.rglob(f"{split}-*.parquet")) for split in SPLITS}
    raw = {split: root / name for split, name in _RAW_NAMES.items()}
    if any(parquet.values()):
        builder, files = "parquet", parquet
    elif any(path.is_file() for path in raw.values()):
        builder, files = "text", {split: [path] for split, path in raw.items() if path.is_file()}
    else:
        raise WikiTextError(
            f"{root}: no WikiText found (expected {{train,validation,test}}-*.parquet or wiki.{{train,valid,test}}.raw)"
        )
    missing = [split for split in SPLITS if not files.get(split)]
    if missing:
        raise WikiTextError(f"{root}: split {', '.join(missing)} missing")
    kwargs = {"keep_linebreaks": True} if builder == "text" else {}
    try:
        ds = datasets.load_dataset(builder, data_files={s: [str(p) for p in files[s]] for s in SPLITS}, **kwargs)
    except Exception as exc:
        raise WikiTextError(f"{root}: could not read as {builder} ({exc})".replace("\n", " ")) from None
    for split in SPLITS:
        if "text" not in ds[split].column_names:
            raise WikiTextError(f"{root}: split {split} has no 'text' column (columns: {ds[split].column_names})")
    digests = {s: [_sha256(p) for p in files[s]] for s in SPLITS}
    return ds, {"kind": f"local-{builder}", "path": str(root), "sha256": digests}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _offline_corpus():
    import datasets
    from pydoc_data.topics import topics

    rows: dict[str, list[str]] = {split: [] for split in SPLITS}
    for name in sorted(topics):
        # Title line in WikiText's " = Title = " style, then the topic's lines.
        bucket = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10
        split = "validation" if bucket == 0 else "test" if bucket == 1 else "train"
        rows[split].append(f" = {name} = \n")
        rows[split].extend(topics[name].strip("\n").splitlines(keepends=True))
        rows[split].append("\n")
    ds = {split: datasets.Dataset.from_dict({"text": rows[split]}) for split in SPLITS}
    version = ".".join(map(str, sys.version_info[:3]))
    return ds, {
        "kind": "offline",
        "corpus": "pydoc_data.topics (Python language reference help topics)",
        "python": version,
    }


def _warn_offline(reason: str) -> None:
    bar = "!" * 78
    print(
        f"\n{bar}\n!! WIKITEXT NOT USED: {reason}.\n"
        "!! Falling back to the OFFLINE corpus (Python's own help text), which is NOT WikiText.\n"
        "!! Point data.wikitext_source at a local copy for real runs (see README).\n"
        f"{bar}\n",
        file=sys.stderr,
    )

"""The user's Roam Research notes: a markdown export, one `.md` file per page.

Pages are split into train/validation by whole file with a seeded shuffle of the files'
relative paths sorted first, so the split depends only on the seed and the set of files,
never on the order the filesystem lists them.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator


class RoamError(ValueError):
    pass


@dataclass(frozen=True)
class RoamPage:
    name: str  # relative path without ".md", e.g. "Books/Dune" (Roam namespaces are folders)
    text: str

    def document(self) -> str:
        """What the model trains on: the page title, then its markdown."""
        return f"{self.name}\n{self.text.rstrip()}"


def find_pages(root: str | Path) -> list[Path]:
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted((p for p in root.rglob("*.md") if p.is_file()), key=lambda p: p.relative_to(root).as_posix())


def load_pages(root: str | Path) -> list[RoamPage]:
    return list(iter_pages(root))


def iter_pages(root: str | Path) -> Iterator[RoamPage]:
    """The pages of find_pages(root), read one at a time (memory flat in the graph's size)."""
    root = Path(root)
    for path in find_pages(root):
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RoamError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
        yield RoamPage(path.relative_to(root).with_suffix("").as_posix(), text.replace("\r\n", "\n"))


def resolve_roam_dir(roam_dir: str | Path, example_dir: str | Path) -> tuple[Path, bool]:
    """The folder to read: the user's export, or the shipped example graph (said loudly)."""
    roam_dir, example_dir = Path(roam_dir), Path(example_dir)
    if find_pages(roam_dir):
        return roam_dir, False
    reason = "is missing" if not roam_dir.exists() else "holds no .md file"
    bar = "!" * 78
    print(
        f"\n{bar}\n!! {roam_dir} {reason}: using the EXAMPLE Roam graph in {example_dir}.\n"
        "!! Export your own graph (Roam: ... > Export All > Markdown) into .roam-data/.\n"
        f"{bar}\n",
        file=sys.stderr,
    )
    if not find_pages(example_dir):
        raise RoamError(f"{example_dir}: the example graph holds no .md file either")
    return example_dir, True


def split_pages(pages: list[RoamPage], seed: int, val_fraction: float) -> tuple[list[RoamPage], list[RoamPage]]:
    """(train, val) by whole page; at least one page each side when there are two or more."""
    if not pages:
        raise RoamError("no Roam pages to split")
    ordered = sorted(pages, key=lambda p: p.name)
    random.Random(seed).shuffle(ordered)
    n_val = min(max(1, round(len(ordered) * val_fraction)), len(ordered) - 1) if len(ordered) > 1 else 0
    return ordered[n_val:], ordered[:n_val]

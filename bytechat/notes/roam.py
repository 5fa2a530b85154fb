"""The user's Roam Research notes: a markdown export, one `.md` file per page.

Pages are split into train/validation by whole file with a seeded shuffle of the files'
relative paths sorted first, so the split depends only on the seed and the set of files,
never on the order the filesystem lists them.
"""

from __future__ import annotations

import os
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


# A page bigger than this is refused: a Roam page is rarely over a few hundred KB, and a
# stray huge file (a dump, a log) would otherwise be read whole and swamp the mix.
MAX_PAGE_BYTES = 4 * 1024 * 1024


def _scan(root: Path) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """(.md files under root, [(symlink, target)] skipped because they lead outside root).

    Symlinked folders are not entered: one inside root holds pages read at their real
    place anyway, and one outside it is not part of the notes.
    """
    real_root = root.resolve()
    pages, outside = [], []
    for folder, dirs, files in os.walk(root, followlinks=False):
        for name in sorted(dirs):
            path = Path(folder, name)
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                outside.append((path, path.resolve()))
        for name in files:
            path = Path(folder, name)
            if not name.endswith(".md") or not path.is_file():
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                outside.append((path, path.resolve()))
                continue
            pages.append(path)
    pages.sort(key=lambda p: p.relative_to(root).as_posix())
    return pages, outside


def find_pages(root: str | Path) -> list[Path]:
    """The .md files under root, sorted; symlinks that lead outside root are left out."""
    root = Path(root)
    return _scan(root)[0] if root.is_dir() else []


def _read_page(path: Path, max_bytes: int) -> str:
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)  # never more than the cap, even from a growing file
    if len(data) > max_bytes:
        size = max(path.stat().st_size, len(data))
        raise RoamError(
            f"{path}: page is {size:,} bytes, over the {max_bytes:,}-byte page cap;"
            " split it or move it out of the notes folder"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RoamError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def load_pages(root: str | Path, max_page_bytes: int = MAX_PAGE_BYTES) -> list[RoamPage]:
    """Every page under root. A symlink leading outside root is skipped with a warning;
    a page over max_page_bytes or not UTF-8 is a RoamError naming the file."""
    return list(iter_pages(root, max_page_bytes))


def iter_pages(root: str | Path, max_page_bytes: int = MAX_PAGE_BYTES) -> Iterator[RoamPage]:
    """load_pages one page at a time (memory flat in the size of the notes; the notes index uses it)."""
    root = Path(root)
    if not root.is_dir():
        return
    paths, outside = _scan(root)
    for link, target in outside:
        print(f"warning: {link}: symlink to {target}, outside {root}; skipped", file=sys.stderr)
    for path in paths:
        text = _read_page(path, max_page_bytes)
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

"""The user's notes, as the pipeline reads them: pages from the notes folder in whatever
format it holds (Roam markdown or JSON, Logseq, Obsidian or plain markdown; see
bytechat/notes/readers/), each a RoamPage whose text is Roam markdown.

Pages are split into train/validation by whole page with a seeded shuffle of the page
names sorted first, so the split depends only on the seed and the set of pages, never
on the order the filesystem lists them.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path
from typing import Iterator

from bytechat.notes import readers
from bytechat.notes.readers import MAX_PAGE_BYTES, NotesError, Page

__all__ = [
    "MAX_PAGE_BYTES",
    "RoamError",
    "RoamPage",
    "find_pages",
    "iter_pages",
    "load_pages",
    "resolve_roam_dir",
    "split_pages",
]

RoamError = NotesError  # a file of the notes that cannot be read; one line naming it
RoamPage = Page  # RoamPage(name, text) as before; readers fill in blocks, uids, source file, times


def find_pages(root: str | Path, fmt: str | None = None) -> list[Path]:
    """The files the notes under root are read from, sorted (for Roam markdown, Logseq and
    Obsidian one per page; a Roam JSON export is one file); symlinks that lead outside
    root are left out. fmt None: notes.format for the user's notes, else detected."""
    return readers.find_files(root, fmt)


def load_pages(root: str | Path, max_page_bytes: int = MAX_PAGE_BYTES, fmt: str | None = None) -> list[RoamPage]:
    """Every page under root. A symlink leading outside root is skipped with a warning;
    a file over max_page_bytes or not UTF-8 is a RoamError naming the file."""
    return list(iter_pages(root, max_page_bytes, fmt))


def iter_pages(root: str | Path, max_page_bytes: int = MAX_PAGE_BYTES, fmt: str | None = None) -> Iterator[RoamPage]:
    """load_pages one page at a time (memory flat in the size of the notes; the notes index uses it)."""
    return readers.iter_pages(root, fmt, max_page_bytes)


def resolve_roam_dir(roam_dir: str | Path, example_dir: str | Path) -> tuple[Path, bool]:
    """The folder to read: the user's notes, or the shipped example graph (said loudly)."""
    roam_dir, example_dir = Path(roam_dir), Path(example_dir)
    if find_pages(roam_dir):
        return roam_dir, False
    if not roam_dir.exists():
        reason = "is missing"
    elif readers.edn_only(roam_dir):
        reason = f"holds only a Roam EDN export. {readers.EDN_NOT_READ}"
    else:
        reason = "holds no notes (.md pages, a Roam .json export, a Logseq graph or an Obsidian vault)"
    bar = "!" * 78
    print(
        f"\n{bar}\n!! {roam_dir} {reason}: using the EXAMPLE Roam graph in {example_dir}.\n"
        "!! Put your own notes into .roam-data/ (README: Your notes).\n"
        f"{bar}\n",
        file=sys.stderr,
    )
    if not find_pages(example_dir):
        raise RoamError(f"{example_dir}: the example graph holds no notes either")
    return example_dir, True


def split_pages(pages: list[RoamPage], seed: int, val_fraction: float) -> tuple[list[RoamPage], list[RoamPage]]:
    """(train, val) by whole page; at least one page each side when there are two or more."""
    if not pages:
        raise RoamError("no Roam pages to split")
    ordered = sorted(pages, key=lambda p: p.name)
    random.Random(seed).shuffle(ordered)
    n_val = min(max(1, round(len(ordered) * val_fraction)), len(ordered) - 1) if len(ordered) > 1 else 0
    return ordered[n_val:], ordered[:n_val]

"""Finding and reading note files safely: symlinks that lead outside the notes folder
are never followed, a file over the page cap or not UTF-8 is refused in one line that
names it, and the listing is sorted by relative path (never the filesystem's order)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable, Iterable

from bytechat.notes.readers.model import NotesError, warn

# A page bigger than this is refused: a Roam page is rarely over a few hundred KB, and a
# stray huge file (a dump, a log) would otherwise be read whole and swamp the mix.
MAX_PAGE_BYTES = 4 * 1024 * 1024


def scan(
    root: Path, keep: Callable[[str], bool], skip_dir: Callable[[str], bool] = lambda name: False
) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """(files under root whose name passes keep, [(symlink, target)] left out because they
    lead outside root). Folders for which skip_dir(name) holds are not entered, nor are
    symlinked folders: one inside root holds files read at their real place anyway, and
    one outside it is not part of the notes."""
    real_root = root.resolve()
    found, outside = [], []
    for folder, dirs, files in os.walk(root, followlinks=False):
        dirs[:] = sorted(name for name in dirs if not skip_dir(name))
        for name in dirs:
            path = Path(folder, name)
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                outside.append((path, path.resolve()))
        for name in files:
            path = Path(folder, name)
            if not keep(name) or not path.is_file():
                continue
            if path.is_symlink() and not path.resolve().is_relative_to(real_root):
                outside.append((path, path.resolve()))
                continue
            found.append(path)
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return found, outside


def warn_outside(root: Path, outside: Iterable[tuple[Path, Path]]) -> None:
    for link, target in outside:
        warn(f"{link}: symlink to {target}, outside {root}; skipped")


def read_text(path: Path, max_bytes: int = MAX_PAGE_BYTES) -> str:
    """A note file's text, `\\r\\n` made `\\n`; NotesError naming it when it is over
    max_bytes or not UTF-8 (never more than the cap is read, even from a growing file)."""
    with open(path, "rb") as fh:
        data = fh.read(max_bytes + 1)
    if len(data) > max_bytes:
        size = max(path.stat().st_size, len(data))
        raise NotesError(
            f"{path}: page is {size:,} bytes, over the {max_bytes:,}-byte page cap;"
            " split it or move it out of the notes folder"
        )
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotesError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def is_markdown(name: str) -> bool:
    return name.endswith(".md")


def hidden(name: str) -> bool:
    return name.startswith(".")

"""Readers for the notes people have, all yielding one page model (readers.model.Page).

    roam-markdown  Roam's markdown export: one .md per page, `- ` bullets (roam_markdown)
    roam-json      Roam's JSON export: the whole graph in one .json (roam_json)
    logseq         a Logseq graph folder: pages/, journals/, logseq/config.edn (logseq)
    obsidian       an Obsidian vault or any folder of markdown notes (markdown);
    markdown       the same reader under its plain name

The format of a notes folder is `notes.format` in params.yaml for the user's notes
(.roam-data/), `auto` by default, and `auto` for any other folder. `auto` looks at what
the folder holds, in this order: a Logseq graph (logseq/config.edn, or journals/ of
yyyy_mm_dd.md files); an Obsidian vault (.obsidian/); a Roam JSON export (a top-level
.json holding a list of pages); .md files whose first lines are `- ` bullets (Roam
markdown) or not (plain markdown). Roam's EDN export is not read (roam_json says why).

Every reader streams (one page at a time), refuses a file over the page cap or not in
UTF-8 in one line naming it (NotesError), and never follows a symlink out of the folder.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Iterator

import yaml

from bytechat.notes.readers import files, logseq, markdown, roam_json, roam_markdown
from bytechat.notes.readers.files import MAX_PAGE_BYTES
from bytechat.notes.readers.model import Block, NotesError, Page

FORMATS = ("auto", "roam-markdown", "roam-json", "logseq", "obsidian", "markdown")
READERS = {
    "roam-markdown": roam_markdown,
    "roam-json": roam_json,
    "logseq": logseq,
    "obsidian": markdown,
    "markdown": markdown,
}
SNIFF_FILES = 50  # .md files looked at to tell Roam markdown from plain markdown
EDN_NOT_READ = roam_json.EDN_NOT_READ

__all__ = [
    "Block",
    "EDN_NOT_READ",
    "FORMATS",
    "MAX_PAGE_BYTES",
    "NotesError",
    "Page",
    "configured_format",
    "configured_roam_graph",
    "detect",
    "find_files",
    "iter_pages",
    "load_pages",
    "resolve_format",
]


def _looks_like_roam(paths: list[Path]) -> bool:
    """Whether most of the first .md files open with a `- ` bullet (Roam's export always
    does; a markdown note opens with a heading, front matter or a paragraph)."""
    votes = []
    for path in paths[:SNIFF_FILES]:
        try:
            with open(path, "rb") as fh:
                head = fh.read(2048).decode("utf-8", errors="ignore").removeprefix("\ufeff")
        except OSError:
            continue
        first = next((line.strip() for line in head.split("\n") if line.strip()), None)
        if first is not None:
            votes.append(first == "-" or (first.startswith("- ") and not first.startswith("---")))
    return not votes or sum(votes) * 2 >= len(votes)


def detect(root: str | Path) -> str | None:
    """The format of the notes in root, by what it holds; None when it holds none."""
    root = Path(root)
    if not root.is_dir():
        return None
    if logseq.is_graph(root):
        return "logseq"
    if (root / ".obsidian").is_dir():
        return "obsidian"
    if roam_json.find(root)[0]:
        return "roam-json"
    pages = _first_markdown(root, SNIFF_FILES)
    if pages:
        return "roam-markdown" if _looks_like_roam(pages) else "markdown"
    return None


def _first_markdown(root: Path, n: int) -> list[Path]:
    """Up to n .md files under root, in sorted order (only as much of the tree is
    walked as it takes), never through a symlink that leads outside root."""
    found: list[Path] = []
    real_root = root.resolve()

    def visit(folder: Path) -> None:
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if len(found) >= n:
                return
            path = Path(entry.path)
            if entry.is_symlink() and not path.resolve().is_relative_to(real_root):
                continue
            if entry.is_dir(follow_symlinks=False):
                visit(path)
            elif entry.name.endswith(".md") and entry.is_file():
                found.append(path)

    visit(root)
    return found


def edn_only(root: str | Path) -> bool:
    """Whether root holds a Roam EDN export and no notes bytechat reads."""
    root = Path(root)
    return root.is_dir() and detect(root) is None and any(root.glob("*.edn"))


@lru_cache(maxsize=8)
def _notes_section(path: str, mtime_ns: int) -> str:
    from bytechat.core.config import ConfigError, NotesConfig  # the one schema of the section

    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return "auto"  # a params.yaml that cannot be read is load_params' error to report
    section = raw.get("notes") if isinstance(raw, dict) else None
    if section is None:
        return "auto"
    if not isinstance(section, dict):
        raise NotesError(f"{path}: notes: expected a mapping, got {type(section).__name__}")
    try:
        return NotesConfig(**section).format
    except ConfigError as exc:
        raise NotesError(f"{path}: notes.{exc}") from None


def configured_roam_graph(params: str | Path | None = None) -> str:
    """`notes.roam_graph` in params.yaml: the Roam graph's name, for links to its blocks
    ("" when unset)."""
    from bytechat.core import paths

    path = Path(params) if params is not None else paths.params_file()
    configured_format(path)  # the section's one-line errors
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return ""
    section = raw.get("notes") if isinstance(raw, dict) else None
    return str(section.get("roam_graph", "")) if isinstance(section, dict) else ""


def configured_format(params: str | Path | None = None) -> str:
    """`notes.format` in params.yaml ("auto" when the key or the file is missing);
    NotesError, one line, for a value that is not one of FORMATS."""
    from bytechat.core import paths

    path = Path(params) if params is not None else paths.params_file()
    try:
        mtime = path.stat().st_mtime_ns
    except OSError:
        return "auto"
    return _notes_section(str(path), mtime)


def _is_user_notes(root: Path) -> bool:
    from bytechat.core import paths

    try:
        return root.resolve() == paths.roam_dir().resolve()
    except OSError:
        return False


def _requested(root: Path, fmt: str | None) -> str:
    if fmt is None:
        fmt = configured_format() if _is_user_notes(root) else "auto"
    if fmt not in FORMATS:
        raise NotesError(f"notes format {fmt!r} is not one of {', '.join(FORMATS)}")
    return fmt


def resolve_format(root: str | Path, fmt: str | None = None) -> str:
    """The reader for root: fmt when given, else notes.format for the user's notes folder
    (`auto` for any other); `auto` is detect(root), roam-markdown when it holds nothing."""
    root = Path(root)
    fmt = _requested(root, fmt)
    return (detect(root) or "roam-markdown") if fmt == "auto" else fmt


def _find(root: Path, fmt: str | None) -> tuple[str, list[Path], list[tuple[Path, Path]]]:
    """(format, files, symlinks leading outside). A format asked for by name reads every
    file it could hold (every top-level .json for roam-json), so one that is not what it
    should be is an error naming it rather than notes quietly left out."""
    requested = _requested(root, fmt)
    name = (detect(root) or "roam-markdown") if requested == "auto" else requested
    found, outside = READERS[name].find(root, explicit=requested != "auto")
    return name, found, outside


def find_files(root: str | Path, fmt: str | None = None) -> list[Path]:
    """The files the notes in root are read from, sorted by relative path (each a page,
    but for Roam JSON, where one file holds them all); [] when root is not a folder."""
    root = Path(root)
    if not root.is_dir():
        return []
    return _find(root, fmt)[1]


def one_file_per_page(root: str | Path, fmt: str | None = None) -> bool:
    return resolve_format(root, fmt) != "roam-json"


def iter_pages(root: str | Path, fmt: str | None = None, max_page_bytes: int = MAX_PAGE_BYTES) -> Iterator[Page]:
    """The pages of the notes in root, one at a time (memory flat in the size of the
    notes). A symlink leading outside root is skipped with a warning; a file over
    max_page_bytes or not UTF-8 is a NotesError naming it."""
    root = Path(root)
    if not root.is_dir():
        return
    name, paths, outside = _find(root, fmt)
    files.warn_outside(root, outside)
    yield from READERS[name].pages(root, paths, max_page_bytes)


def load_pages(root: str | Path, fmt: str | None = None, max_page_bytes: int = MAX_PAGE_BYTES) -> list[Page]:
    return list(iter_pages(root, fmt, max_page_bytes))

"""Roam Research's markdown export: one `.md` file per page, named after its title
(namespaced pages such as `Books/Dune` are folders), nested `- ` bullets.

The page text is the file's text, as it always was; its blocks (Page.tree()) are its
outline lines (each line a block, children by indent), with the line each starts on. The
markdown export has no block uids, times or headings, and its `((uid))` block references
cannot be resolved (the JSON export has them all: roam_json)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from bytechat.notes.readers import files
from bytechat.notes.readers.model import Block, Draft, Page, outline_lines, tree

NAME = "roam-markdown"


def find(root: Path, explicit: bool = False) -> tuple[list[Path], list[tuple[Path, Path]]]:
    return files.scan(root, files.is_markdown)


def blocks_of(text: str) -> tuple[Block, ...]:
    """The block tree of Roam-markdown text: each outline line a block, children by indent,
    with the line each starts on."""
    rows = ((depth, Draft(body, line=number)) for number, depth, body in outline_lines(text))
    return tuple(draft.freeze() for draft in tree(rows))


def pages(root: Path, paths: list[Path], max_page_bytes: int) -> Iterator[Page]:
    """The pages, text as in the files. Their block tree is not built here (Page.tree()
    builds it when asked): page_blocks needs only the lines, which the text has."""
    for path in paths:
        relative = path.relative_to(root)
        text = files.read_text(path, max_page_bytes)
        yield Page(relative.with_suffix("").as_posix(), text, source=relative.as_posix(), format=NAME)

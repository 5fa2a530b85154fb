"""Logseq graph folders: `pages/` and `journals/` of outline markdown (`- ` bullets
indented by tabs or spaces), next to a `logseq/` folder with config.edn.

- Titles: a journal's file name (`2026_12_02.md`) becomes the day's title in Roam's
  form ("December 2nd, 2026"); a page's file name is its title, with `___` (or the
  older `%2F`) as the namespace separator (`Books___Dune.md` is "Books/Dune"); a
  `title::` page property wins over both.
- Page properties (`key:: value` lines before the first bullet) are the page's
  attributes, and each also becomes a `key:: value` block, as Roam keeps attributes.
- Block properties are the `key:: value` lines under a bullet: `id::` is the block's
  uid (Logseq writes it when a block is referenced) and is taken out of the text with
  `collapsed::`; the others stay in the text as Roam attributes do.
- `TODO` / `DONE` markers become Roam's `{{[[TODO]]}}` / `{{[[DONE]]}}`.
- `((uuid))` references and `{{embed ((uuid))}}` are replaced by the referenced block's
  text, found in a first pass that keeps only the blocks carrying an `id::`.
`.org` pages and the `logseq/` folder (settings, backups) are not read."""

from __future__ import annotations

import calendar
import re
from pathlib import Path
from typing import Iterator
from urllib.parse import unquote

from bytechat.notes.readers import files
from bytechat.notes.readers.model import BLOCK_REF, Draft, Page, day_title, links_in, refs_in, tree

NAME = "logseq"
FOLDERS = ("pages", "journals")
_PROPERTY = re.compile(r"^([A-Za-z0-9_][A-Za-z0-9_.-]*)::(?:\s+(.*?))?\s*$")
_BULLET = re.compile(r"^(\s*)-(?:\s+(.*)|\s*)$")
_JOURNAL = re.compile(r"^(\d{4})_(\d{2})_(\d{2})$")
_MARKER = re.compile(r"^(TODO|DONE)\s+")
_EMBED = re.compile(r"\{\{\s*embed\s*\(\(([A-Za-z0-9_-]{6,})\)\)\s*\}\}")
MAX_LEVELS = 64  # deeper bullets are read at this level (the text shows at most 8)
HIDDEN_PROPERTIES = {"id", "collapsed"}  # block properties that are Logseq's bookkeeping, not text
PAGE_ONLY = {"title", "id", "collapsed", "filters"}  # page properties that become no block


def is_graph(root: Path) -> bool:
    """A Logseq graph: logseq/config.edn, or a journals/ folder of yyyy_mm_dd.md files."""
    if (root / "logseq" / "config.edn").is_file():
        return True
    journals = root / "journals"
    return journals.is_dir() and any(_JOURNAL.match(p.stem) for p in journals.glob("*.md"))


def find(root: Path, explicit: bool = False) -> tuple[list[Path], list[tuple[Path, Path]]]:
    found, outside = [], []
    for folder in FOLDERS:
        path = root / folder
        if path.is_symlink() and not path.resolve().is_relative_to(root.resolve()):
            outside.append((path, path.resolve()))
        elif path.is_dir():
            inside, away = files.scan(path, files.is_markdown, skip_dir=files.hidden)
            found += inside
            outside += away
    found.sort(key=lambda p: p.relative_to(root).as_posix())
    return found, outside


def title_of(path: Path, root: Path) -> str:
    relative = path.relative_to(root)
    stem = relative.with_suffix("").as_posix().split("/", 1)[-1]  # less pages/ or journals/
    journal = _JOURNAL.match(stem) if relative.parts[0] == "journals" else None
    if journal:
        year, month, day = map(int, journal.groups())
        if 1 <= month <= 12 and 1 <= day <= calendar.monthrange(year, month)[1]:
            return day_title(year, month, day)
    stem = stem.replace("___", "/")
    return unquote(stem) if "%" in stem else stem


def _task(text: str) -> str:
    return _MARKER.sub(lambda m: "{{[[" + m.group(1) + "]]}} ", text, count=1)


def parse(text: str) -> tuple[list[tuple[str, str, int]], list[Draft]]:
    """([(key, value, line)] page properties, top-level drafts) of one Logseq page."""
    properties: list[tuple[str, str, int]] = []
    rows: list[tuple[int, Draft]] = []
    indents: list[int] = []
    current: Draft | None = None
    in_fence = False
    for number, raw in enumerate(text.split("\n"), 1):
        line = raw.expandtabs(4)
        bullet = None if in_fence else _BULLET.match(line)
        if bullet:
            indent = len(bullet.group(1))
            while indents and indents[-1] > indent:
                indents.pop()
            if not indents or indents[-1] < indent:
                indents.append(indent)
            current = Draft(_task(bullet.group(2) or ""), line=number)
            rows.append((min(len(indents) - 1, MAX_LEVELS), current))
            continue
        body = line.strip()
        if body.startswith("```"):
            in_fence = not in_fence
        if not body:
            continue
        prop = None if in_fence else _PROPERTY.match(body)
        if current is None:  # before the first bullet: page properties, or a first block without a bullet
            if prop:
                properties.append((prop.group(1).lower(), prop.group(2) or "", number))
                continue
            current = Draft(_task(body), line=number)
            rows.append((0, current))
            indents = [0]
            continue
        if prop:
            key, value = prop.group(1).lower(), prop.group(2) or ""
            current.attributes.append((key, value))
            if key == "id":
                current.uid = value
            if key in HIDDEN_PROPERTIES:
                continue
        current.string = f"{current.string}\n{body}" if current.string else body
    return properties, tree(rows)


def _resolve(draft: Draft, texts: dict[str, str]) -> None:
    original = draft.string
    draft.refs, draft.links = refs_in(original), links_in(original)
    if "((" in original:

        def sub(match: re.Match) -> str:
            return texts.get(match.group(1), match.group(0))

        draft.string = BLOCK_REF.sub(sub, _EMBED.sub(sub, original))
    for child in draft.children:
        _resolve(child, texts)


def _walk(drafts: list[Draft]) -> Iterator[Draft]:
    for draft in drafts:
        yield draft
        yield from _walk(draft.children)


def referenced_text(paths: list[Path], max_page_bytes: int) -> dict[str, str]:
    """uuid -> one-line text of every block that carries an `id::` (what references name)."""
    texts: dict[str, str] = {}
    for path in paths:
        text = files.read_text(path, max_page_bytes)
        if "id::" not in text:
            continue
        for draft in _walk(parse(text)[1]):
            if draft.uid:
                texts[draft.uid] = " ".join(draft.string.split())
    return texts


def pages(root: Path, paths: list[Path], max_page_bytes: int) -> Iterator[Page]:
    texts = referenced_text(paths, max_page_bytes)
    for path in paths:
        properties, drafts = parse(files.read_text(path, max_page_bytes))
        attributes = {key: value for key, value, _ in properties}
        name = attributes.get("title") or title_of(path, root)
        shown = [Draft(f"{key}:: {value}", line=line) for key, value, line in properties if key not in PAGE_ONLY]
        for draft in drafts:
            _resolve(draft, texts)
        yield Page.from_blocks(
            name,
            (draft.freeze() for draft in [*shown, *drafts]),
            uid=attributes.get("id", ""),
            source=path.relative_to(root).as_posix(),
            format=NAME,
            attributes=tuple((key, value) for key, value, _ in properties),
        )

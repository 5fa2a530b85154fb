"""Roam Research's JSON export (`... > Export All > JSON`): the whole graph in one file,
a list of pages `{"title", "uid", "create-time", "edit-time", "children": [blocks]}`, each
block `{"string", "uid", "create-time", "edit-time", "heading", "children"}`.

The file is read as a stream, one page at a time (json's raw_decode over a growing
buffer): memory holds one page and the text of the blocks other blocks reference, never
the graph. `((uid))` block references and `{{embed: ((uid))}}` are replaced by the
referenced block's text (Roam shows them so), which takes one pass to find the uids
referenced and one to read their text before the pass that yields pages; a reference
to a uid the export does not hold stays as it is (blocks.plain drops it, as for the
markdown export). A page over the page cap, a file that is not UTF-8 or not a Roam
export, or a page without a title is one line naming the file.

Roam's EDN export is not read: it is a datascript database dump whose datoms (entity,
attribute, value) are not grouped by page, so rebuilding any page needs the whole graph
in memory, and edn_format, the Python EDN parser, reads about 1 MB/s (measured); the
JSON export holds the same pages, uids and times, page by page.
"""

from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, Iterator

from bytechat.notes.readers import files
from bytechat.notes.readers.model import BLOCK_REF, Draft, NotesError, Page, links_in, refs_in

NAME = "roam-json"
CHUNK = 1 << 20  # characters read at a time
_EMBED = re.compile(r"\{\{\s*(?:\[\[)?embed(?:\]\])?\s*:\s*\(\(([A-Za-z0-9_-]{6,})\)\)\s*\}\}")
EDN_NOT_READ = (
    "Roam's EDN export is not read (a datascript dump: rebuilding a page needs the whole graph in memory,"
    " and Python's EDN parser reads ~1 MB/s); export JSON instead (... > Export All > JSON)"
)


def is_export(path: Path) -> bool:
    """Whether a .json file looks like a Roam export: a list of objects with Roam's keys
    (or an empty list) in its first 4 KB."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096).decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n")
    except OSError:
        return False
    after = head[1:].lstrip()
    roam_keys = any(f'"{key}"' in head for key in ("title", "children", "string", "uid"))
    return head.startswith("[") and (after.startswith("]") or (after.startswith("{") and roam_keys))


def find(root: Path, explicit: bool = False) -> tuple[list[Path], list[tuple[Path, Path]]]:
    """The Roam JSON exports at the top of root (an unzipped export holds one): every
    .json there when the format was asked for by name, else those that look like one."""
    found, outside = files.scan(root, lambda name: name.endswith(".json"), skip_dir=lambda name: True)
    return [path for path in found if explicit or is_export(path)], outside


def iter_array(path: Path, max_item_bytes: int) -> Iterator[Any]:
    """The items of the JSON list in path, one at a time."""
    decoder = json.JSONDecoder()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    with open(path, "rb") as fh:
        buf, pos, eof, offset = "", 0, False, 0

        def more() -> bool:
            nonlocal buf, pos, eof, offset
            if eof:
                return False
            data = fh.read(CHUNK)
            try:
                chunk = utf8.decode(data, final=not data)
            except UnicodeDecodeError as exc:
                raise NotesError(f"{path}: not UTF-8 text (byte {offset + exc.start}: {exc.reason})") from None
            offset += len(data)
            eof = not data
            buf, pos = buf[pos:] + chunk, 0
            return True

        def skip() -> str:
            """The next character that is not whitespace ("" at the end of the file)."""
            nonlocal pos
            while True:
                while pos < len(buf) and buf[pos] in " \t\r\n\ufeff":
                    pos += 1
                if pos < len(buf):
                    return buf[pos]
                if not more():
                    return ""

        first = skip()
        if first != "[":
            what = "empty" if first == "" else f"starts with {first!r}"
            raise NotesError(f"{path}: not a Roam JSON export ({what}; expected a list of pages)")
        pos += 1
        index = 0
        if skip() == "]":
            return
        while True:
            try:
                item, end = decoder.raw_decode(buf, pos)
            except RecursionError:
                raise NotesError(f"{path}: page {index + 1} is nested too deep to read") from None
            except json.JSONDecodeError as exc:
                if len(buf) - pos > 4 * max_item_bytes:
                    raise NotesError(f"{path}: page {index + 1} is over the {max_item_bytes:,}-byte page cap") from None
                if more():
                    continue
                raise NotesError(f"{path}: not valid JSON in page {index + 1} ({exc.msg})") from None
            if end - pos > max_item_bytes // 4 and len(buf[pos:end].encode("utf-8")) > max_item_bytes:
                title = item.get("title") if isinstance(item, dict) else None
                raise NotesError(
                    f"{path}: page {index + 1} ({title!r}) is over the {max_item_bytes:,}-byte page cap;"
                    " split it in Roam"
                )
            yield item
            index += 1
            pos = end
            sep = skip()
            if sep == "]":
                return
            if sep != ",":
                raise NotesError(f"{path}: not valid JSON after page {index} (expected , or ] but found {sep!r})")
            pos += 1
            skip()


def _pages(path: Path, max_page_bytes: int) -> Iterator[tuple[int, dict]]:
    for number, item in enumerate(iter_array(path, max_page_bytes), 1):
        if not isinstance(item, dict):
            raise NotesError(f"{path}: page {number} is a {type(item).__name__}, not a page object")
        yield number, item


def _children(path: Path, node: dict, where: str) -> list:
    children = node.get("children") or []  # a page or block without children has none
    if not isinstance(children, list):
        raise NotesError(f"{path}: {where}: children is a {type(children).__name__}, not a list")
    return children


def _blocks(path: Path, node: dict, where: str) -> Iterator[dict]:
    """Every block under node, depth first."""
    for child in _children(path, node, where):
        if not isinstance(child, dict):
            raise NotesError(f"{path}: {where}: a block is a {type(child).__name__}, not an object")
        yield child
        yield from _blocks(path, child, where)


def _string(block: dict) -> str:
    value = block.get("string", "")
    return value if isinstance(value, str) else str(value)


def _time(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def referenced_text(paths: list[Path], max_page_bytes: int) -> dict[str, str]:
    """uid -> text of each block some block references (one line; its own references
    resolved one level down). Two passes over the exports, holding only these texts."""
    wanted: set[str] = set()
    for path in paths:
        for number, page in _pages(path, max_page_bytes):
            try:
                strings = [_string(block) for block in _blocks(path, page, f"page {number}")]
            except RecursionError:
                raise NotesError(f"{path}: page {number}: blocks nested too deep to read") from None
            for string in strings:
                if "((" in string:
                    wanted.update(BLOCK_REF.findall(string))
    if not wanted:
        return {}
    found: dict[str, str] = {}
    for path in paths:
        for number, page in _pages(path, max_page_bytes):
            for block in _blocks(path, page, f"page {number}"):
                if block.get("uid") in wanted:
                    found[block["uid"]] = " ".join(_string(block).split())
    return {uid: resolve(text, found, depth=1) for uid, text in found.items()}


def resolve(string: str, texts: dict[str, str], depth: int = 0) -> str:
    """string with block embeds and references replaced by the referenced text."""
    if "((" not in string:
        return string

    def sub(match: re.Match) -> str:
        text = texts.get(match.group(1))
        return match.group(0) if text is None or depth > 1 else resolve(text, texts, depth + 1)

    return BLOCK_REF.sub(sub, _EMBED.sub(sub, string))


def _draft(path: Path, block: dict, texts: dict[str, str], where: str) -> Draft:
    heading = block.get("heading")
    draft = Draft(
        resolve(_string(block), texts),
        uid=str(block.get("uid") or ""),
        heading=heading if isinstance(heading, int) and not isinstance(heading, bool) else 0,
        created=_time(block.get("create-time")),
        edited=_time(block.get("edit-time")),
    )
    original = _string(block)  # its refs and links are those it names, not those of the text put in
    draft.refs, draft.links = refs_in(original), links_in(original)
    for child in _children(path, block, where):
        if not isinstance(child, dict):
            raise NotesError(f"{path}: {where}: a block is a {type(child).__name__}, not an object")
        draft.children.append(_draft(path, child, texts, where))
    return draft


def pages(root: Path, paths: list[Path], max_page_bytes: int) -> Iterator[Page]:
    texts = referenced_text(paths, max_page_bytes)
    for path in paths:
        source = path.relative_to(root).as_posix()
        for number, item in _pages(path, max_page_bytes):
            title = item.get("title")
            if not isinstance(title, str) or not title.strip():
                raise NotesError(f"{path}: page {number} has no title")
            where = f"page {number} ({title!r})"
            try:
                drafts = [_draft(path, block, texts, where) for block in _children(path, item, where)]
            except RecursionError:
                raise NotesError(f"{path}: {where}: blocks nested too deep to read") from None
            yield Page.from_blocks(
                title,
                (d.freeze() for d in drafts),
                uid=str(item.get("uid") or ""),
                source=source,
                format=NAME,
                created=_time(item.get("create-time")),
                edited=_time(item.get("edit-time")),
            )

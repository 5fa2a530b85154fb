"""Obsidian vaults and plain markdown folders: notes in paragraphs and headings.

Parsed with markdown-it-py (CommonMark, plus tables), not with regexes:
- YAML front matter (between `---` lines at the top) is the page's attributes, each
  also a `key:: value` block as Roam keeps attributes; front matter that is not a YAML
  mapping is one warning naming the file, and its lines are read as blocks.
- A heading is a block: its text, with the paragraphs, lists, code and table rows under
  it (up to the next heading) as its children. Before the first heading, each
  paragraph is a block and each top-level list item is a block with its nested items.
- Obsidian markup becomes Roam markup, which blocks.plain turns into text:
  `[[Note|shown]]` -> shown, `[[Note#Heading]]` -> `[[Note]]`, `![[embed]]` -> `[[embed]]`,
  `==highlight==` -> `^^highlight^^`, `- [ ] task` -> `{{[[TODO]]}} task`, `%%comments%%`
  dropped; a trailing `^block-id` is the block's uid.
- The page name is the file's path less `.md` (folders are namespaces, as for Roam);
  each block records the line it starts on and, for a heading, its level.
Hidden folders (`.obsidian/`, `.trash/`, `.git/`) and every file that is not `.md`
(attachments: images, PDFs, canvases) are skipped.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Iterator

import yaml
from markdown_it import MarkdownIt

from bytechat.notes.readers import files
from bytechat.notes.readers.model import Draft, Page, warn

NAME = "markdown"
_FRONT = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.S)
_COMMENT = re.compile(r"%%.*?%%", re.S)
_WIKI = re.compile(r"(!?)\[\[([^\[\]|#^]*)((?:#\^?[^\[\]|]*)?)(?:\|([^\[\]]*))?\]\]")
_HIGHLIGHT = re.compile(r"==(?=\S)(.+?)(?<=\S)==")
_BLOCK_ID = re.compile(r"\s+\^([A-Za-z0-9-]+)\s*$")
_TASK = re.compile(r"^\[([ xX])\]\s+")

_parser = MarkdownIt("commonmark").enable("table")


def find(root: Path, explicit: bool = False) -> tuple[list[Path], list[tuple[Path, Path]]]:
    return files.scan(root, lambda name: files.is_markdown(name) and not files.hidden(name), skip_dir=files.hidden)


def _wiki(match: re.Match, texts: dict[str, str] | None = None) -> str:
    embed, target, anchor, shown = match.groups()
    if embed and anchor.startswith("#^") and texts and anchor[2:].strip() in texts:
        return texts[anchor[2:].strip()]  # ![[Note#^id]]: the block's text, as Obsidian shows it
    if shown is not None and shown.strip():
        return shown.strip()
    if not target.strip():  # [[#Heading]]: a link inside the page
        return anchor.lstrip("#^").strip()
    return f"[[{target.strip()}]]"


def inline(text: str, texts: dict[str, str] | None = None) -> tuple[str, str]:
    """(Roam-markup text, block id) of one paragraph, heading or list item; texts: block
    id -> text, for block embeds."""
    block_id = _BLOCK_ID.search(text)
    uid = block_id.group(1) if block_id else ""
    if block_id:
        text = text[: block_id.start()]
    text = _HIGHLIGHT.sub(r"^^\1^^", _WIKI.sub(lambda m: _wiki(m, texts), text))
    lines = [line.strip().removesuffix("\\").rstrip() for line in text.split("\n")]
    return "\n".join(line for line in lines if line), uid


def _links(text: str) -> list[str]:
    return [m.group(2).strip() for m in _WIKI.finditer(text) if m.group(2).strip()]


def front_matter(text: str, path: Path, quiet: bool = False) -> tuple[list[tuple[str, str]], list[str], int, str]:
    """(attributes, lines to read as blocks when it is not YAML, lines it took, the rest)."""
    match = _FRONT.match(text)
    if not match:
        return [], [], 0, text
    body = match.group(1) or ""
    taken = match.group(0).count("\n") + (0 if match.group(0).endswith("\n") else 1)
    rest = text[match.end() :]
    try:
        data = yaml.safe_load(body) if body.strip() else {}
    except yaml.YAMLError as exc:
        problem = str(exc).splitlines()[0]
        if not quiet:
            warn(f"{path}: front matter is not YAML ({problem}); read as text")
        return [], body.splitlines(), taken, rest
    if data is None:
        data = {}
    if not isinstance(data, dict):
        if not quiet:
            warn(f"{path}: front matter is a YAML {type(data).__name__}, not key: value pairs; read as text")
        return [], body.splitlines(), taken, rest
    return [(str(key), _value(value)) for key, value in data.items()], [], taken, rest


def _value(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(_value(v) for v in value)
    if isinstance(value, dict):
        return ", ".join(f"{k}: {_value(v)}" for k, v in value.items())
    return "" if value is None else str(value)


class _Builder:
    """Drafts from markdown-it's token stream (see the module docstring)."""

    def __init__(self, offset: int, texts: dict[str, str] | None = None) -> None:
        self.offset = offset  # lines before the markdown (front matter)
        self.texts = texts  # block id -> text, for ![[Note#^id]] embeds
        self.roots: list[Draft] = []
        self.heading: Draft | None = None
        self.items: list[Draft] = []  # the list items open, innermost last
        self.links: list[str] = []

    def line(self, token) -> int:
        return token.map[0] + 1 + self.offset if token.map else 0

    def add(self, draft: Draft) -> None:
        container = self.items[-1] if self.items else self.heading
        (container.children if container is not None else self.roots).append(draft)

    def text(self, raw: str) -> tuple[str, str]:
        self.links += _links(raw)
        return inline(raw, self.texts)

    def build(self, tokens) -> list[Draft]:
        i = 0
        while i < len(tokens):
            token = tokens[i]
            kind = token.type
            if kind == "heading_open":
                string, uid = self.text(tokens[i + 1].content)
                draft = Draft(string, line=self.line(token), uid=uid, heading=int(token.tag[1]))
                self.items = []
                self.roots.append(draft)
                self.heading = draft
                i += 3
                continue
            if kind == "list_item_open":
                draft = Draft("", line=self.line(token))
                self.add(draft)
                self.items.append(draft)
            elif kind == "list_item_close":
                self.items.pop()
            elif kind == "paragraph_open":
                string, uid = self.text(tokens[i + 1].content)
                item = self.items[-1] if self.items else None
                if item is not None and not item.string:  # the item's own text
                    task = _TASK.match(string)
                    if task:
                        mark = "{{[[TODO]]}} " if task.group(1) == " " else "{{[[DONE]]}} "
                        string = mark + string[task.end() :]
                    item.string, item.uid = string, item.uid or uid
                elif string:
                    self.add(Draft(string, line=self.line(token), uid=uid))
                i += 3
                continue
            elif kind in ("fence", "code_block") and token.content.strip():
                self.add(Draft(token.content.rstrip("\n"), line=self.line(token)))
            elif kind == "tr_open":
                cells, j = [], i + 1
                while tokens[j].type != "tr_close":
                    if tokens[j].type == "inline":
                        cells.append(self.text(tokens[j].content)[0])
                    j += 1
                if any(cells):
                    self.add(Draft(" | ".join(cells), line=self.line(token)))
                i = j
            elif kind == "html_block" and not token.content.lstrip().startswith("<!--"):
                content = token.content.strip()
                if content:
                    self.add(Draft(content, line=self.line(token)))
            i += 1
        return [draft for draft in self.roots if draft.string or draft.children]


def parse(
    text: str, path: Path, texts: dict[str, str] | None = None, quiet: bool = False
) -> tuple[list[tuple[str, str]], list[Draft], list[str]]:
    """(attributes, top-level drafts, linked page titles) of one markdown note."""
    attributes, loose, taken, rest = front_matter(text, path, quiet)
    rest = _COMMENT.sub(lambda m: "\n" * m.group(0).count("\n"), rest)  # comments out, lines kept
    builder = _Builder(taken, texts)
    drafts = builder.build(_parser.parse(rest))
    first_line = {}  # the front matter line each key is on
    for n, line in enumerate(text.split("\n")[1:taken], 2):
        first_line.setdefault(line.split(":", 1)[0].strip(), n)
    shown = [Draft(f"{key}:: {value}", line=first_line.get(key, 0)) for key, value in attributes]
    shown += [Draft(line.strip(), line=n) for n, line in enumerate(loose, 2) if line.strip()]
    return attributes, [*shown, *drafts], builder.links


def _walk(drafts: list[Draft]) -> Iterator[Draft]:
    for draft in drafts:
        yield draft
        yield from _walk(draft.children)


def embedded_text(paths: list[Path], max_page_bytes: int) -> dict[str, str]:
    """block id -> one-line text of each block some note embeds (`![[Note#^id]]`): a pass
    to find the ids embedded, and one over the notes holding them (none when no note
    embeds a block)."""
    wanted: set[str] = set()
    for path in paths:
        text = files.read_text(path, max_page_bytes)
        if "#^" in text:
            wanted.update(
                m.group(3)[2:].strip() for m in _WIKI.finditer(text) if m.group(1) and m.group(3).startswith("#^")
            )
    texts: dict[str, str] = {}
    for path in paths if wanted else ():
        text = files.read_text(path, max_page_bytes)
        if any(f"^{uid}" in text for uid in wanted):
            drafts = parse(text, path, quiet=True)[1]  # its warnings come when the page is read
            texts.update((d.uid, " ".join(d.string.split())) for d in _walk(drafts) if d.uid in wanted)
    return texts


def pages(root: Path, paths: list[Path], max_page_bytes: int) -> Iterator[Page]:
    texts = embedded_text(paths, max_page_bytes)
    for path in paths:
        relative = path.relative_to(root)
        attributes, drafts, links = parse(files.read_text(path, max_page_bytes), path, texts)
        yield Page.from_blocks(
            relative.with_suffix("").as_posix(),
            (draft.freeze() for draft in drafts),
            source=relative.as_posix(),
            format=NAME,
            attributes=tuple(attributes),
            links=tuple(links),
        )

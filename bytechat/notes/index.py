"""The notes index: every block of the notes in one SQLite file, searched by several
retrievers whose rankings are fused (docs/notes.md, "How retrieval works").

    blocks      (id, page, position, key, text, uid, source, line, heading)
    blocks_fts  FTS5 over (page, key, text), porter-stemmed; titles: FTS5 over page titles
    vocab       (word, df): the notes' words; meta: format, version, source, fingerprint

search(): the question's topic words (bytechat.notes.query) ranked by FTS5 bm25 several
ways (as typed, over key and text only, with the notes' own words a typo or word form
may mean, with a follow-up's topic), fused by reciprocal rank with what the question
word asks for; a block is kept only with EVIDENCE (its share of the question's words,
weighted by how specific each is in English). A question naming a page gets that page's
most informative blocks. Builds go to a temp file renamed over the index (never half an
index), streamed in batches (flat memory); the fingerprint tells a stale index.
"""

from __future__ import annotations

import hashlib
import math
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.core.atomic import current_umask
from bytechat.notes import roam
from bytechat.notes.blocks import NoteBlock, is_tags_only, page_blocks
from bytechat.notes.links import block_link
from bytechat.notes.query import (
    Vocabulary,
    answer_kind,
    fuse,
    match_expression,
    query_terms,
    refers_back,
    specificity,
    title_expression,
    words,
)

FORMAT = "bytechat-notes-index"
VERSION = 4  # 2: the key column; 3: the vocabulary; 4: where each block came from
TOKENIZER = "porter unicode61 remove_diacritics 2"
PAGE_WEIGHT = 3.0  # bm25 weights of the page title, block key and block text columns
KEY_WEIGHT = 1.0
TEXT_WEIGHT = 1.0
BATCH_ROWS = 2000  # blocks per INSERT batch while building

CANDIDATES = 8  # each retriever ranks k * CANDIDATES blocks before fusion
EVIDENCE = 0.4  # a hit must hold this specificity-weighted share of the question's words
NEIGHBOUR_WEIGHT = 0.6  # a word matched through a vocabulary neighbour, in fusion and evidence
TOPIC_WEIGHT = 0.5  # a follow-up's conversation topic, in fusion
TEXT_LIST_WEIGHT = 0.5  # the ranking over blocks' own key and text (no title), in fusion
ANSWER_KIND_WEIGHT = 0.5  # the candidates holding what the question word asks for, in fusion

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blocks (
    id INTEGER PRIMARY KEY, page TEXT NOT NULL, position INTEGER NOT NULL, key TEXT NOT NULL, text TEXT NOT NULL,
    uid TEXT NOT NULL, source TEXT NOT NULL, line INTEGER NOT NULL, heading TEXT NOT NULL
);
CREATE TABLE vocab (word TEXT PRIMARY KEY, df INTEGER NOT NULL) WITHOUT ROWID;
CREATE VIRTUAL TABLE titles USING fts5(page, tokenize='{TOKENIZER}');
CREATE VIRTUAL TABLE blocks_fts USING fts5(
    page, key, text, content='blocks', content_rowid='id', tokenize='{TOKENIZER}'
);
INSERT INTO blocks_fts (blocks_fts, rank) VALUES ('rank', 'bm25({PAGE_WEIGHT}, {KEY_WEIGHT}, {TEXT_WEIGHT})');
"""
_SEARCH = """
SELECT b.id, b.page, b.text, b.position, hits.rank
FROM (SELECT rowid, rank FROM blocks_fts WHERE blocks_fts MATCH ? ORDER BY rank LIMIT ?) AS hits
JOIN blocks AS b ON b.id = hits.rowid
ORDER BY hits.rank, b.id
"""
# The page whose title holds every term (bm25 over titles: a shorter title wins), then its blocks.
_TITLE_SEARCH = "SELECT page, -rank FROM titles WHERE titles MATCH ? ORDER BY rank LIMIT 1"
_PAGE_BLOCKS = "SELECT id, page, text, position FROM blocks WHERE page = ? ORDER BY position"
_KEY = re.compile(r"^([^\W\d_][\w' -]{0,30}): \S")
_TODO = re.compile(r"^\s*TODO ", re.MULTILINE)


class NotesIndexError(ValueError):
    """A missing, corrupt or foreign index file (the message names the file)."""


@dataclass(frozen=True)
class Hit:
    page: str
    text: str
    score: float  # -bm25(): higher is better
    position: int = 0  # the block's index within its page
    uid: str = ""  # where it came from (NoteBlock's fields), and a link that opens it
    source: str = ""
    line: int = 0
    link: str = ""

    @property
    def block(self) -> NoteBlock:
        return NoteBlock(self.page, self.text, self.position, uid=self.uid, source=self.source, line=self.line)


def block_key(text: str) -> str:
    """What a block is, by its first line: the key of `key: value` ("finished"), "TODO"
    for a block with open tasks, else nothing (a block's words are in its text column)."""
    first = text.partition("\n")[0]
    key = _KEY.match(first)
    if key:
        return key.group(1)
    return "TODO" if _TODO.search(text) else ""


# ---------------------------------------------------------------- fingerprint


def notes_fingerprint(root: str | Path, fmt: str | None = None) -> str:
    """sha256 over the relative path and the bytes of every file the notes in root are
    read from (roam.find_pages), and the notes format unless it is Roam markdown (so an
    index built before the readers stays current). Content, not modification times:
    like DVC, so a `git checkout` that rewrites the files unchanged leaves the index
    current in both views (20 MB of notes: ~0.1 s). fmt None: as roam.find_pages."""
    from bytechat.notes import readers

    root = Path(root)
    digest = hashlib.sha256(f"{FORMAT}/{VERSION}\n".encode())
    fmt = readers.resolve_format(root, fmt)
    if fmt != "roam-markdown":
        digest.update(f"notes format {fmt}\n".encode())
    for path in roam.find_pages(root, fmt):
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode())
        digest.update(data)
    return digest.hexdigest()


def source_name(root: str | Path) -> str:
    """How the meta table names a folder: relative to the repository when inside it."""
    root = Path(root).resolve()
    try:
        return root.relative_to(paths.ROOT).as_posix()
    except ValueError:
        return root.as_posix()


def source_path(name: str) -> Path:
    path = Path(name)
    return path if path.is_absolute() else paths.ROOT / path


# ---------------------------------------------------------------- the index


class NotesIndex:
    """Search over one index; safe to call from several threads (one connection, a lock)."""

    def __init__(self, conn: sqlite3.Connection, path: Path | None) -> None:
        self._conn = conn
        self._lock = threading.RLock()  # search calls topic_words under it
        self.path = path
        where = path or "in-memory notes index"
        try:
            self.meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            self._n_blocks = conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
            self._vocab = Vocabulary(dict(conn.execute("SELECT word, df FROM vocab")))
            self._folder = Path(self.meta.get("source", "")).name
            self._graph = self.meta.get("roam_graph", "")
        except sqlite3.DatabaseError as exc:
            conn.close()
            raise NotesIndexError(f"{where}: not a bytechat notes index ({exc})") from None
        if self.meta.get("format") != FORMAT or self.meta.get("version") != str(VERSION):
            conn.close()
            found = f"{self.meta.get('format')} v{self.meta.get('version')}"
            raise NotesIndexError(f"{where}: not a {FORMAT} v{VERSION} file (found {found}); rebuild it")

    # ---- building and opening

    @classmethod
    def build(
        cls, blocks: Iterable[NoteBlock], path: str | Path | None = None, *, meta: dict | None = None
    ) -> NotesIndex:
        """Index blocks; path None keeps the index in memory, else it is written
        atomically to path and opened read-only. meta is stored too; it is read after
        the last block, so a generator may fill it in as it goes."""
        if path is None:
            conn = sqlite3.connect(":memory:", check_same_thread=False, isolation_level=None)
            _fill(conn, blocks, meta or {})
            return cls(conn, None)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        try:
            conn = sqlite3.connect(tmp, isolation_level=None)
            try:
                # A temp file that is renamed only when complete needs no journal.
                conn.execute("PRAGMA journal_mode=OFF")
                conn.execute("PRAGMA synchronous=OFF")
                _fill(conn, blocks, meta or {})
            finally:
                conn.close()
            os.chmod(tmp, 0o666 & ~current_umask())
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            for leftover in (tmp, tmp + "-journal"):
                if os.path.exists(leftover):
                    os.unlink(leftover)
            raise
        return cls.open(path)

    @classmethod
    def open(cls, path: str | Path) -> NotesIndex:
        """Open a written index read-only; NotesIndexError (one line naming the file) if
        it is missing or not an index."""
        path = Path(path)
        if not path.is_file():
            raise NotesIndexError(f"{path}: no notes index there (build it with `dvc repro index`)")
        try:
            conn = sqlite3.connect(
                path.resolve().as_uri() + "?mode=ro", uri=True, check_same_thread=False, isolation_level=None
            )
        except sqlite3.Error as exc:
            raise NotesIndexError(f"{path}: cannot open the notes index ({exc})") from None
        return cls(conn, path)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> NotesIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---- reading

    def __len__(self) -> int:
        return self._n_blocks

    @property
    def pages(self) -> int:
        return int(self.meta.get("pages", 0))

    def search(self, query: str, k: int = 3, topic: Sequence[str] = ()) -> list[Hit]:
        """The k best blocks for query, best first; [] if it has no topic words or no
        block holds enough of them (see the module docstring).

        topic: for a follow-up ("who teaches it?"), the conversation's topic, most
        telling first (the previous question, then the reply to it). Its words rank
        below the query's own (TOPIC_WEIGHT); when the query refers back (an anaphor),
        a block that holds enough of the previous question's words has evidence too;
        a query with no words of its own is searched by the topic alone."""
        if k <= 0:
            return []
        own = self.topic_words(query)
        context = [t for t in dict.fromkeys(w for text in topic for w in self.topic_words(text)) if t not in own]
        base = own or context
        if not base:
            return []
        limit = int(k) * CANDIDATES
        try:
            with self._lock:
                near = {t: self._vocab.neighbours(t) for t in [*own, *context] if not self._matches_any(t)}
                page = self._page_route(base, near, k)
                if page:
                    return page
                close = [w for t in base for w in near.get(t, [])]
                lists = [
                    (1.0, self._ranked(base, limit)),
                    (TEXT_LIST_WEIGHT, self._ranked([*base, *close], limit, own_text=True)),
                ]
                if close:
                    lists.append((NEIGHBOUR_WEIGHT, self._ranked([*base, *close], limit)))
                if own and context:
                    lists.append((TOPIC_WEIGHT, self._ranked([*own, *context, *close], limit)))
                fused = fuse(lists)
                kind = answer_kind(query)
                if kind is not None:  # the candidates holding what the question word asks for
                    fused = fuse([(1.0, fused), (ANSWER_KIND_WEIGHT, [r for r in fused if kind.search(r[2])])])
                ids = [row[0] for row in fused]
                evidence = self._evidence(base if own else self.topic_words(topic[0]) or base, near, ids)
                if own and topic and refers_back(query):  # "where does he work?": the topic's blocks count
                    asked = [t for t in self.topic_words(topic[0]) if t not in own]
                    for rowid, value in self._evidence(asked, near, ids).items():
                        evidence[rowid] = max(evidence[rowid], value)
        except sqlite3.DatabaseError as exc:
            raise NotesIndexError(f"{self.path or 'in-memory notes index'}: search failed ({exc})") from None
        kept = [row for row in fused if evidence[row[0]] >= EVIDENCE]
        return self._with_origin(kept[:k])

    def _with_origin(self, rows: list[tuple]) -> list[Hit]:
        """Hits of (id, page, text, position, score) rows, with where each block came from."""
        with self._lock:
            sql = f"SELECT id, uid, source, line, heading FROM blocks WHERE id IN ({','.join('?' * len(rows))})"
            origin = {row[0]: row[1:] for row in self._conn.execute(sql, [row[0] for row in rows])}
        hits = []
        for rowid, page, text, position, score in rows:
            uid, source, line, heading = origin[rowid]
            link = block_link(self.meta.get("notes_format", ""), self._folder, page, uid, source, heading, self._graph)
            hits.append(Hit(page, text, score, position, uid, source, line, link))
        return hits

    def topic_words(self, text: str) -> list[str]:
        """query_terms(text) less the misspelt ways of asking ("wat", "wen") the notes never
        use; a word FTS5 matches (stemming included: "live" for "Lives") is never one."""
        with self._lock:
            return [t for t in query_terms(text) if not self._vocab.is_misspelt_asking(t) or self._matches_any(t)]

    def _matches_any(self, term: str) -> bool:
        sql = "SELECT 1 FROM blocks_fts WHERE blocks_fts MATCH ? LIMIT 1"
        return self._conn.execute(sql, (match_expression([term]),)).fetchone() is not None

    def _ranked(self, terms: list[str], limit: int, own_text: bool = False) -> list[tuple]:
        """bm25's ranking of the blocks matching any of terms; own_text: in the block's
        key or text only (FTS5's bm25 divides by the whole row's length, so a page-title
        match, which every block of the page shares, favours the page's shortest blocks)."""
        expression = match_expression(dict.fromkeys(terms))
        if own_text:
            expression = "{key text} : (" + expression + ")"
        return self._conn.execute(_SEARCH, (expression, limit)).fetchall()

    def _page_route(self, terms: list[str], near: dict[str, list[str]], k: int) -> list[Hit]:
        """A question whose every word (or a neighbour of it) is in a page's title: that
        page's most informative blocks (by the rarity of their words), tags-only last."""
        groups = [[t, *near.get(t, [])] for t in terms]
        best = self._conn.execute(_TITLE_SEARCH, (title_expression(groups),)).fetchone()
        if best is None:
            return []
        title, score = best
        rows = [(*row, score) for row in self._conn.execute(_PAGE_BLOCKS, (title,))]
        title_words = set(words(title))
        rows.sort(key=lambda r: (is_tags_only(r[2]), -self._information(r[2], title_words), r[3]))
        return self._with_origin(rows[:k])

    def _information(self, text: str, skip: set[str]) -> float:
        return sum(self._idf(self._vocab.df.get(w, 0)) for w in set(query_terms(text)) - skip)

    def _idf(self, df: int) -> float:
        return math.log(1 + (self._n_blocks - df + 0.5) / (df + 0.5))

    def _evidence(self, terms: list[str], near: dict[str, list[str]], ids: list[int]) -> dict[int, float]:
        """For each block id, the rarity-weighted share of the searched words it holds
        (FTS5's own tokenizer and stemmer decide what holds; a neighbour counts less)."""
        if not ids:
            return {}
        held = dict.fromkeys(ids, 0.0)
        marks = ",".join("?" * len(ids))
        sql = f"SELECT rowid FROM blocks_fts WHERE blocks_fts MATCH ? AND rowid IN ({marks})"
        total = 0.0
        for term in terms:
            mass = specificity(term)
            total += mass
            found = {rowid for (rowid,) in self._conn.execute(sql, (match_expression([term]), *ids))}
            if near.get(term):
                close = {rowid for (rowid,) in self._conn.execute(sql, (match_expression(near[term]), *ids))}
                for rowid in close - found:
                    held[rowid] += NEIGHBOUR_WEIGHT * mass
            for rowid in found:
                held[rowid] += mass
        return {rowid: value / total if total else 0.0 for rowid, value in held.items()}

    def stale_reason(self, notes_dir: str | Path | None = None) -> str | None:
        """Why the index does not match the notes in notes_dir (default: the folder it was
        built from), or None when it does. An index built without a source never is."""
        source = self.meta.get("source")
        if source is None:
            return None
        built_from = source_path(source).resolve()
        folder = Path(notes_dir).resolve() if notes_dir is not None else built_from
        if folder != built_from:
            return f"it was built from {source}, but the notes in use are {source_name(folder)}"
        if not folder.is_dir():
            return f"its notes folder {source} is gone"
        if notes_fingerprint(folder) != self.meta.get("fingerprint"):
            return f"the notes in {source} changed since it was built"
        return None

    def is_stale(self, notes_dir: str | Path | None = None) -> bool:
        return self.stale_reason(notes_dir) is not None


def _fill(conn: sqlite3.Connection, blocks: Iterable[NoteBlock], meta: dict) -> None:
    conn.executescript(_SCHEMA)
    conn.execute("BEGIN")
    next_id, n_blocks, batch = 1, 0, []
    df: Counter[str] = Counter()
    for block in blocks:
        origin = (block.uid, block.source, block.line, block.heading)
        batch.append((next_id, block.page, block.position, block_key(block.text), block.text, *origin))
        df.update(set(words(f"{block.page}\n{block.text}")))
        next_id += 1
        if len(batch) >= BATCH_ROWS:
            n_blocks += _insert(conn, batch)
    n_blocks += _insert(conn, batch)
    conn.executemany("INSERT INTO vocab (word, df) VALUES (?, ?)", sorted(df.items()))
    conn.execute("CREATE INDEX blocks_page ON blocks (page, position)")
    conn.execute("INSERT INTO titles (page) SELECT DISTINCT page FROM blocks ORDER BY page")
    conn.execute("INSERT INTO blocks_fts (blocks_fts) VALUES ('optimize')")
    n_pages = conn.execute("SELECT count(DISTINCT page) FROM blocks").fetchone()[0]
    rows = {
        "pages": n_pages,
        **meta,
        "format": FORMAT,
        "version": VERSION,
        "blocks": n_blocks,
        "built": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(k, str(v)) for k, v in rows.items()])
    conn.execute("COMMIT")


def _insert(conn: sqlite3.Connection, batch: list[tuple]) -> int:
    sql = "INSERT INTO blocks (id, page, position, key, text, uid, source, line, heading) VALUES (?,?,?,?,?,?,?,?,?)"
    conn.executemany(sql, batch)
    conn.executemany(
        "INSERT INTO blocks_fts (rowid, page, key, text) VALUES (?, ?, ?, ?)", [(r[0], r[1], r[3], r[4]) for r in batch]
    )
    n = len(batch)
    batch.clear()
    return n


def index_folder(
    notes_dir: str | Path, path: str | Path | None = None, progress: bool = True, fmt: str | None = None
) -> NotesIndex:
    """Index every page under notes_dir (one page in memory at a time), with a progress
    bar; records the folder, the page count and the fingerprint. RoamError (naming the
    file) on a page that is not UTF-8. fmt: the notes format (None: as roam.find_pages)."""
    from bytechat.notes import readers

    root = Path(notes_dir)
    fmt = readers.resolve_format(root, fmt)
    fingerprint = notes_fingerprint(root, fmt)  # before reading: a page edited meanwhile shows as stale
    total = len(roam.find_pages(root, fmt)) if readers.one_file_per_page(root, fmt) else None
    meta = {"source": source_name(root), "fingerprint": fingerprint, "pages": 0, "notes_format": fmt}
    meta["roam_graph"] = readers.configured_roam_graph() if fmt == "roam-json" else ""

    def blocks() -> Iterator[NoteBlock]:
        pages = roam.iter_pages(root, fmt=fmt)
        for page in tqdm(pages, total=total, desc="index", unit="page", disable=not progress):
            meta["pages"] += 1
            yield from page_blocks(page)

    return NotesIndex.build(blocks(), path, meta=meta)

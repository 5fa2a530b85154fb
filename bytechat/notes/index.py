"""The notes index: every block of the notes in one SQLite file, and how it is built,
opened and checked against the notes (searching it: bytechat.notes.search).

    blocks      (id, page, position, key, text, uid, source, line, heading)
    blocks_fts  FTS5 over (page, key, text), porter-stemmed; titles: FTS5 over page titles
    vocab       (word, df): the notes' words; meta: format, version, source, fingerprint

A build goes to a temp file renamed over the index (never half an index), streamed in
batches (flat memory in the size of the notes); the fingerprint (sha256 over the pages'
paths and bytes) tells an index that no longer matches its notes.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Iterable, Iterator, Sequence

from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.core.atomic import current_umask
from bytechat.notes import roam
from bytechat.notes.blocks import TODO_LINE, NoteBlock, page_blocks
from bytechat.notes.query import Vocabulary, words
from bytechat.notes.search import Hit, Search

FORMAT = "bytechat-notes-index"
VERSION = 4  # 2: the key column; 3: the vocabulary; 4: where each block came from
TOKENIZER = "porter unicode61 remove_diacritics 2"
PAGE_WEIGHT = 3.0  # bm25 weights of the page title, block key and block text columns
KEY_WEIGHT = 1.0
TEXT_WEIGHT = 1.0
BATCH_ROWS = 2000  # blocks per INSERT batch while building

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
_KEY = re.compile(r"^([^\W\d_][\w' -]{0,30}): \S")


class NotesIndexError(ValueError):
    """A missing, corrupt or foreign index file (the message names the file)."""


def block_key(text: str) -> str:
    """What a block is, by its first line: the key of `key: value` ("finished"), "TODO"
    for a block with open tasks, else nothing (a block's words are in its text column)."""
    first = text.partition("\n")[0]
    key = _KEY.match(first)
    if key:
        return key.group(1)
    return "TODO" if TODO_LINE.search(text) else ""


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


class NotesIndex(Search):
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
        """The k best blocks for query, best first (bytechat.notes.search.Search.find)."""
        try:
            return self.find(query, k, topic)
        except sqlite3.DatabaseError as exc:
            raise NotesIndexError(f"{self.path or 'in-memory notes index'}: search failed ({exc})") from None

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

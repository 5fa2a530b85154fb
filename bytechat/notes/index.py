"""The notes index: every block of the notes in SQLite's FTS5 full-text index, BM25-ranked.

One SQLite file (Python's own sqlite3, no extra dependency) holds

    blocks      (id, page, position, text)      the note blocks, in page order
    blocks_fts  FTS5 over (page, text)          external content: the words point at blocks
    meta        (key, value)                    format, version, source folder, page and
                                                block counts, fingerprint of the notes

The FTS5 tokenizer is `porter unicode61 remove_diacritics 2`: words are runs of letters
and digits, lower-cased, Latin accents folded ("Zürich" matches "zurich") and English
endings stemmed ("hives" matches "hive"). A question becomes query_terms(question) (its
words less a generous English stopword list: "what did I write about my ..." is no
topic) joined with OR, each term quoted so no typed character is FTS5 syntax. Ranking is
FTS5's bm25() over three columns: the page title (weight PAGE_WEIGHT), the block's key
(KEY_WEIGHT; the key of a `key: value` first line, or TODO for a block of tasks) and its
text. Two rules on top, each measured on generated questions (docs/notes.md):
- the key column: "when did I finish The Midnight Library?" must pick the block
  "finished: July 30th, 2026", not "status: finished" (both hold the word);
- a question whose every term is in a page's title is about that page ("what's in my
  notes on Piranesi?", "anything on September 1st, 2026?"), so its hits are that page's
  blocks from the top, in page order, not whichever short block bm25 favours; blocks
  that only tag the page (`type: #person #work`) go after the others.

A written index is built into a temp file beside its path and renamed over it, so a
killed build never leaves half an index. Blocks are streamed into SQLite in batches, so
memory stays flat in the size of the notes (index_folder reads one page at a time).

The fingerprint is a sha256 over the pages' relative paths and contents: stale_reason()
compares it with the folder now, so chat can tell an index that no longer matches the
notes.
"""

from __future__ import annotations

import hashlib
import os
import re
import sqlite3
import tempfile
import threading
import time
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.core.atomic import current_umask
from bytechat.notes import roam
from bytechat.notes.blocks import NoteBlock, is_tags_only, page_blocks

FORMAT = "bytechat-notes-index"
VERSION = 2  # 2: the key column
TOKENIZER = "porter unicode61 remove_diacritics 2"
PAGE_WEIGHT = 3.0  # bm25 weights of the page title, block key and block text columns
KEY_WEIGHT = 1.0
TEXT_WEIGHT = 1.0
BATCH_ROWS = 2000  # blocks per INSERT batch while building

# Words that say how a person asks, not what about, chosen by word class and never
# because an eval prompt used them: English function words (articles, pronouns,
# prepositions, conjunctions, auxiliaries and modals, question words and the quantifiers
# of "how many / how long / how often"), the verbs of asking about notes ("remind me",
# "tell me", "find", "look up", "what did I write", "notes", "page", "summarise"),
# interjections (greetings, thanks, yes/no: they name no topic) and contraction tails
# ("what's" -> "what", "s"). "todo" is NOT here: TODO blocks are asked for ("what's on my
# todo list?"). Content words ("today", "morning", "tired", "joke") are topics, even in
# small talk: whether notes are found for them is retrieval's job, measured by the eval.
STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any anybody anyone anything are aren as at
    be because been before being below between both but by can cannot could couldn did didn do does
    doesn doing don done down during each either else ever every everything few for from
    further get gets go going got had hadn has hasn have haven having he her here hers herself him
    himself his how however i if in into is isn it its itself just kind let like me mine more most
    much must my myself no nor not now of off on once one only or other our ours ourselves out over
    own same shall she should so some something sort such than that the their theirs them
    themselves then there these they thing things this those through to too under until up upon us
    very was wasn way we were weren what whatever when whenever where which while who whom whose why
    will with would wouldn yet you your yours yourself yourselves many long often anyway actually really
    find know list look mention mentioned need note noted notes page pages please put remind remember
    said say says see show summarise summarize summary tell want write writes writing written wrote
    hi hello hey hiya yo thanks thank thx cheers ok okay yes yeah yep nope bye goodbye sorry
    s t m d ll re ve
    """.split()
)

CANDIDATES = 4  # search ranks k * CANDIDATES blocks, then keeps the k best that cover the query
MIN_COVERAGE = 0.5  # a hit must match more than this share of the query's terms
_WORD = re.compile(r"[^\W_]+")  # runs of letters and digits, like unicode61's token characters

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE blocks (
    id INTEGER PRIMARY KEY, page TEXT NOT NULL, position INTEGER NOT NULL, key TEXT NOT NULL, text TEXT NOT NULL
);
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
# The pages whose titles hold every term, each from its top: pages ranked by how well
# their title matches (title-only bm25, the best of the page's rows, so a shorter title
# wins), blocks in page order.
_PAGE_SEARCH = """
SELECT id, page, text, position, max(score) OVER (PARTITION BY page) AS page_score
FROM (SELECT b.id, b.page, b.text, b.position, -bm25(blocks_fts, 1.0, 0.0, 0.0) AS score
      FROM blocks_fts JOIN blocks AS b ON b.id = blocks_fts.rowid WHERE blocks_fts MATCH ?)
ORDER BY page_score DESC, page, position LIMIT ?
"""
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

    @property
    def block(self) -> NoteBlock:
        return NoteBlock(self.page, self.text, self.position)


# ---------------------------------------------------------------- query terms


def _fold_latin(word: str) -> str:
    """Accents off Latin letters, as remove_diacritics does ("zürich" -> "zurich");
    other scripts are left alone (FTS5 folds only Latin)."""
    out = []
    for ch in word:
        if ord(ch) < 0x80:
            out.append(ch)
            continue
        parts = unicodedata.normalize("NFD", ch)
        out.append(parts[0] if len(parts) > 1 and ord(parts[0]) < 0x250 else ch)
    return "".join(out)


def query_terms(text: str) -> list[str]:
    """The topic words of a question: lower-cased, accent-folded words with the
    stopwords removed, deduplicated, in order of first appearance."""
    terms: list[str] = []
    for word in _WORD.findall(text):
        term = _fold_latin(word.lower())
        if term not in STOPWORDS and term not in terms:
            terms.append(term)
    return terms


def _quoted(term: str) -> str:
    return '"' + term.replace('"', '""') + '"'


def match_expression(terms: Iterable[str]) -> str:
    """FTS5 MATCH text: the terms ORed, each a quoted string (no FTS5 syntax survives)."""
    return " OR ".join(map(_quoted, terms))


def title_expression(terms: Iterable[str]) -> str:
    """FTS5 MATCH text for blocks whose page title holds every one of terms."""
    return "page : (" + " AND ".join(map(_quoted, terms)) + ")"


def block_key(text: str) -> str:
    """What a block is, by its first line: the key of `key: value` ("finished"), "TODO"
    for a block with open tasks, else nothing (a block's words are in its text column)."""
    first = text.partition("\n")[0]
    key = _KEY.match(first)
    if key:
        return key.group(1)
    return "TODO" if _TODO.search(text) else ""


# ---------------------------------------------------------------- fingerprint


def notes_fingerprint(root: str | Path) -> str:
    """sha256 over the relative path and the bytes of every page find_pages(root) lists.
    Content, not modification times: like DVC, so a `git checkout` that rewrites the
    files unchanged leaves the index current in both views (20 MB of notes: ~0.1 s)."""
    root = Path(root)
    digest = hashlib.sha256(f"{FORMAT}/{VERSION}\n".encode())
    for path in roam.find_pages(root):
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
        self._lock = threading.Lock()
        self.path = path
        where = path or "in-memory notes index"
        try:
            self.meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
            self._n_blocks = conn.execute("SELECT count(*) FROM blocks").fetchone()[0]
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

    def search(self, query: str, k: int = 3) -> list[Hit]:
        """The k best blocks for query, best first; [] if it has no terms or no match.

        A block must match more than half of the query's terms (in its page title or
        text): "what's my blood type?" must not answer with a block that only says
        "type: #habits". Without that, a question the notes do not cover almost always
        finds some block sharing one word, and the model quotes it."""
        terms = query_terms(query)
        if not terms or k <= 0:
            return []
        try:
            with self._lock:
                rows = self._conn.execute(_PAGE_SEARCH, (title_expression(terms), int(k) * CANDIDATES)).fetchall()
                if rows:  # the question names a page: its blocks from the top, tags-only ones last
                    pages = list(dict.fromkeys(row[1] for row in rows))
                    rows.sort(key=lambda row: (pages.index(row[1]), is_tags_only(row[2])))
                    return [Hit(page, text, score, position) for _, page, text, position, score in rows[:k]]
                rows = self._conn.execute(_SEARCH, (match_expression(terms), int(k) * CANDIDATES)).fetchall()
                if len(terms) > 1 and rows:
                    matched = self._terms_matched(terms, [row[0] for row in rows])
                    rows = [row for row in rows if matched[row[0]] > len(terms) * MIN_COVERAGE]
        except sqlite3.DatabaseError as exc:
            raise NotesIndexError(f"{self.path or 'in-memory notes index'}: search failed ({exc})") from None
        return [Hit(page, text, -rank, position) for _, page, text, position, rank in rows[:k]]

    def _terms_matched(self, terms: list[str], ids: list[int]) -> dict[int, int]:
        """For each block id, how many of terms it matches (FTS5's own tokenizer and stemmer)."""
        matched = dict.fromkeys(ids, 0)
        marks = ",".join("?" * len(ids))
        for term in terms:
            sql = f"SELECT rowid FROM blocks_fts WHERE blocks_fts MATCH ? AND rowid IN ({marks})"
            for (rowid,) in self._conn.execute(sql, (match_expression([term]), *ids)):
                matched[rowid] += 1
        return matched

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
    for block in blocks:
        batch.append((next_id, block.page, block.position, block_key(block.text), block.text))
        next_id += 1
        if len(batch) >= BATCH_ROWS:
            n_blocks += _insert(conn, batch)
    n_blocks += _insert(conn, batch)
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
    conn.executemany("INSERT INTO blocks (id, page, position, key, text) VALUES (?, ?, ?, ?, ?)", batch)
    conn.executemany(
        "INSERT INTO blocks_fts (rowid, page, key, text) VALUES (?, ?, ?, ?)", [(r[0], r[1], r[3], r[4]) for r in batch]
    )
    n = len(batch)
    batch.clear()
    return n


def index_folder(notes_dir: str | Path, path: str | Path | None = None, progress: bool = True) -> NotesIndex:
    """Index every page under notes_dir (one page in memory at a time), with a progress
    bar; records the folder, the page count and the fingerprint. RoamError (naming the
    file) on a page that is not UTF-8."""
    root = Path(notes_dir)
    fingerprint = notes_fingerprint(root)  # before reading: a page edited meanwhile shows as stale
    total = len(roam.find_pages(root))
    meta = {"source": source_name(root), "fingerprint": fingerprint, "pages": 0}

    def blocks() -> Iterator[NoteBlock]:
        for page in tqdm(roam.iter_pages(root), total=total, desc="index", unit="page", disable=not progress):
            meta["pages"] += 1
            yield from page_blocks(page)

    return NotesIndex.build(blocks(), path, meta=meta)

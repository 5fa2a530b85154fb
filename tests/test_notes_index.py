"""The notes index (SQLite FTS5, BM25) and retrieval for chat, on tiny graphs written here."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytechat.core import paths
from bytechat.notes import roam
from bytechat.notes.blocks import GROUP_BYTES, NO_NOTES, NoteBlock, page_blocks, render_notes
from bytechat.text.chat_format import format_chat
from bytechat.notes.index import Hit, NotesIndex, NotesIndexError, index_folder, notes_fingerprint
from bytechat.notes import answer_kinds, query, search
from bytechat.notes.search import PAGE_BLOCKS
from bytechat.eval.grounded import EVERYDAY_PROMPTS
from bytechat.notes.dialogues.asking import KEYWORD_TEMPLATES, PAGE_TEMPLATES
from bytechat.notes.answer_kinds import NAME, PLACE, answer_kind, span_kind
from bytechat.notes.query import (
    day_mentions,
    names_page,
    possessors,
    query_terms,
    words,
)
from tests.helpers import write_tree
from bytechat.notes.dialogues import everyday
from bytechat.notes.retrieval import (
    is_small_talk,
    notes_budget,
    open_for_chat,
    retrieve_for_chat,
    sources_payload,
    with_notes,
)

REPO = Path(__file__).resolve().parent.parent

TINY_GRAPH = {
    "Sourdough Starter.md": "- name:: Gus\n- Feeding\n    - Ratio 1:1:1 by weight: 50 g starter, 50 g flour, 50 g water.\n"
    "- Hungry: liquid on top and an acetone smell.\n",
    "Bees.md": "- hives:: 3\n- Hive two swarmed in May; caught the swarm in the plum tree.\n- Varroa check every autumn.\n",
    "Marta.md": "- birthday:: 12 March\n- Likes green tea and climbing.\n",
    "Garden/Tomatoes.md": "- Varieties: San Marzano, Sungold\n- {{[[TODO]]}} stake the tomatoes before the storm\n",
    "Zürich trip.md": "- Hotel near Langstrasse, booked for two nights.\n- Café Sprüngli for Luxemburgerli.\n",
    "Inbox.md": "- {{[[TODO]]}} renew the passport\n- Read about bees and honey prices.\n",
}


def write_graph(folder: Path, pages: dict[str, str | bytes] = TINY_GRAPH) -> Path:
    return write_tree(folder, pages)


def indexed(tmp_path: Path, pages: dict[str, str]) -> NotesIndex:
    """The index of a graph of its own, written under tmp_path."""
    return index_folder(write_graph(tmp_path / "n", pages), tmp_path / "i.sqlite", progress=False)


def after_one_exchange(idx: NotesIndex, question: str, reply: str, follow: str) -> list[Hit]:
    """What chat retrieves for follow, after question was answered with reply."""
    messages = [{"role": "user", "content": question}, {"role": "assistant", "content": reply}]
    return retrieve_for_chat(idx, [*messages, {"role": "user", "content": follow}])


@pytest.fixture
def graph(tmp_path) -> Path:
    return write_graph(tmp_path / "notes")


@pytest.fixture
def index(graph, tmp_path):
    with index_folder(graph, tmp_path / "index" / "index.sqlite", progress=False) as idx:
        yield idx


# ---------------------------------------------------------------- query terms


@pytest.mark.parametrize(
    ("question", "page", "whole"),
    [
        ("what did I write about sourdough?", "Sourdough Starter", True),
        ("Summarise my page on Zürich trip.", "Zürich trip", True),
        ("tell me about my Miso Soup", "Recipes/Miso Soup", True),
        ("how do I feed the sourdough starter?", "Sourdough Starter", False),  # "feed": one fact
        ("booking reference for the Copenhagen hotel?", "Copenhagen Trip", False),
        ("hi", "Sourdough Starter", False),  # no topic words: nothing asked of the page
        ("recap of my sourdough starter?", "Sourdough Starter", True),  # summary's nouns ask
        ("sum up my recipe for miso soup", "Recipes/Miso Soup", True),  # a title's plural is its word
        ("what did I write on 2 Dec?", "December 2nd, 2026", True),  # a day named: that day's title
        ("what did I write on 2 Dec?", "December 3rd, 2026", False),
        ("what did Lena bring on 2 Dec?", "December 2nd, 2026", False),  # words beyond the title
        ("can you give me a rundown of the sourdough starter", "Sourdough Starter", True),  # "give me" asks
        ("what did I give Lena?", "Lena", False),  # "give" alone is a topic word
        ("what happened on 2 Dec?", "December 2nd, 2026", True),  # a day's page is asked for whole
        ("what happened to the Sourdough Starter?", "Sourdough Starter", False),  # not a day: one fact
        ("and which mushrooms?", "Recipes/Mushroom Risotto", False),  # a follow-up asks for something in it
        ("what about its sourdough?", "Sourdough Starter", False),
    ],
)
def test_names_page_is_a_question_about_the_whole_page(question, page, whole):
    assert names_page(question, page) is whole


def test_query_terms_drop_question_words_and_keep_topics():
    assert query_terms("What did I write about my sourdough?") == ["sourdough"]
    assert query_terms("How many hives do I have?") == ["hives"]
    assert query_terms("When is Marta's birthday?") == ["marta", "birthday"]
    assert query_terms("Remind me, tell me: summarise my page on Bees, the notes") == ["bees"]
    assert query_terms("what's on my TODO list?") == ["todo"], "TODO blocks are asked for: todo is a topic"
    assert query_terms("Zürich ZURICH zurich café") == ["zurich", "cafe"], "Latin accents fold, duplicates go"
    assert query_terms("日本語 study, 2027") == ["日本語", "study", "2027"]
    for small_talk in ("hi", "Thanks!", "who are you?", "ok, thank you", ""):
        assert query_terms(small_talk) == [], small_talk


# ---------------------------------------------------------------- search


@pytest.mark.parametrize(
    "question, page",
    [
        ("what did I write about sourdough?", "Sourdough Starter"),
        ("how many hives do I have?", "Bees"),
        ("when is Marta's birthday?", "Marta"),
        ("what's on my todo list for the tomatoes?", "Garden/Tomatoes"),
        ("which hotel in Zurich?", "Zürich trip"),
        ("what ratio do I feed the starter", "Sourdough Starter"),
    ],
)
def test_search_ranks_the_right_page_first(index, question, page):
    hits = index.search(question, k=3)
    assert hits and hits[0].page == page, [(h.page, h.text) for h in hits]
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True), "best first"
    assert all(h.score > 0 for h in hits), "score is -bm25(): higher is better"


def test_hits_are_whole_blocks_with_their_position(index):
    hit = index.search("ratio feeding starter", k=1)[0]
    assert hit.text == "Feeding\n  Ratio 1:1:1 by weight: 50 g starter, 50 g flour, 50 g water."
    assert hit.block == NoteBlock("Sourdough Starter", hit.text, 1)
    assert len(index) == 14 and index.pages == 6


def test_no_terms_or_no_match_is_an_empty_list(index):
    assert index.search("hi there, how are you?") == []
    assert index.search("quantum chromodynamics") == []
    assert index.search("sourdough", k=0) == []


@pytest.mark.parametrize(
    "query",
    [
        '"',
        'sourdough"',
        "a AND OR NOT",
        "NEAR(bees hives, 2)",
        "bee*",
        "^bees",
        "page:bees",
        "{page text}: x",
        "(((",
        "-bees",
        "+",
        "bees' OR '1'='1",
        "\x00bees",
        "col:value:another",
        "🙂 bees 🐝",
    ],
)
def test_fts5_syntax_in_a_query_never_breaks_search(index, query):
    hits = index.search(query)
    assert isinstance(hits, list)
    if query_terms(query) == ["bees"]:
        assert hits, "the words around the syntax still count"


def test_a_hit_must_cover_most_of_the_question(index):
    """One shared word is not an answer: "blood type" must not find "type: #habits"."""
    assert index.search("how many hives do I have?"), "one term, matched"
    assert index.search("when is Marta's birthday?"), "two terms, both matched"
    assert index.search("when is Gustav's birthday?") == [], "birthday alone covers half the question"
    assert index.search("sourdough starter bees"), "two of three terms"


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=60))
def test_any_text_is_a_safe_query(query):
    hits = _shared_index().search(query, k=2)
    assert len(hits) <= 2


_SHARED: list[NotesIndex] = []


def _shared_index() -> NotesIndex:
    if not _SHARED:
        blocks = [NoteBlock(p.removesuffix(".md"), t, 0) for p, t in TINY_GRAPH.items()]
        _SHARED.append(NotesIndex.build(blocks))
    return _SHARED[0]


def test_concurrent_searches_from_threads_agree(index):
    expected = index.search("bees hives swarm")
    results, errors = [], []

    def worker():
        try:
            for _ in range(50):
                results.append(index.search("bees hives swarm"))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(results) == 200 and all(r == expected for r in results)


def test_search_on_the_example_graph_is_fast():
    index = index_folder(paths.example_roam_dir(), progress=False)
    assert len(index) > 300
    questions = [f"what did I write about {p.stem}?" for p in roam.find_pages(paths.example_roam_dir())] * 4
    times = []
    for q in questions:
        start = time.perf_counter()
        index.search(q, k=3)
        times.append(time.perf_counter() - start)
    times.sort()
    assert times[len(times) // 2] < 0.020, f"median {times[len(times) // 2] * 1e3:.1f} ms (target: under 20 ms)"


def test_a_question_naming_a_page_gets_that_page_from_the_top():
    """bm25 alone favours a page's short blocks; a question about the page as a whole
    ("what's in my notes on Piranesi?") must start where the page starts."""
    blocks = [
        NoteBlock("Books/Piranesi", "A house of endless halls, tides on the lower floors, statues everywhere.", 0),
        NoteBlock("Books/Piranesi", "status: finished", 1),
        NoteBlock("Books/Piranesi", "rating: 5/5", 2),
        NoteBlock("Piranesi etchings", "Seen at the museum: the imaginary prisons.", 0),
        NoteBlock("Reading List", "Piranesi, then Jonathan Strange.", 0),
    ]
    with NotesIndex.build(blocks) as idx:
        hits = idx.search("what's in my notes on Piranesi?", k=3)
        assert [(h.page, h.position) for h in hits] == [
            ("Books/Piranesi", 0),
            ("Books/Piranesi", 1),
            ("Books/Piranesi", 2),
        ]
        assert all(h.score > 0 for h in hits) and [h.score for h in hits] == sorted(
            (h.score for h in hits), reverse=True
        )
        # A word beyond the title is a question about one block: bm25 decides again.
        assert idx.search("Piranesi rating", k=1)[0].text == "rating: 5/5"
        assert idx.search("piranesi etchings", k=1)[0].page == "Piranesi etchings", "all terms in that title"


def test_a_page_s_tags_come_after_what_it_says():
    """Roam pages start with `type: #person`; "who is Priya?" wants what the page says."""
    blocks = [
        NoteBlock("Priya", "type: #person #work", 0),
        NoteBlock("Priya", "relation: my manager since March", 1),
        NoteBlock("Priya", "1:1s every other Thursday", 2),
    ]
    with NotesIndex.build(blocks) as idx:
        assert [h.position for h in idx.search("who is Priya?", k=3)] == [1, 2, 0]
        # a question beyond the page's name: a tag it says ("#work") is no answer, its key ("type") is asked
        assert [h.position for h in idx.search("what's in my notes about work with Priya?", k=3)][-1] == 0
        assert idx.search("what type of page is Priya?", k=3)[0].position == 0


def test_a_whole_page_question_gets_more_of_the_page_than_a_fact_question():
    """search.PAGE_BLOCKS: "tell me about X" is answered from several of the page's blocks
    (chat shows as many as fit); a question for one fact on the page gets k."""
    blocks = [NoteBlock("Gus", f"note {n}: fed on day {n} at 0{n}:00", n) for n in range(8)]
    with NotesIndex.build(blocks) as idx:
        page = idx.search("tell me about Gus", k=3)
        assert [h.position for h in page] == list(range(PAGE_BLOCKS))
        assert len(idx.search("what time is Gus fed?", k=3)) == 3  # a time asked: one fact
        shown = retrieve_for_chat(idx, [{"role": "user", "content": "tell me about Gus"}], k=3)
        assert len(shown) == PAGE_BLOCKS, "chat shows them all when no budget cuts"
        tight = notes_budget(256, [{"role": "user", "content": "tell me about Gus"}])
        assert (
            0
            < len(retrieve_for_chat(idx, [{"role": "user", "content": "tell me about Gus"}], budget_bytes=tight))
            < PAGE_BLOCKS
        )


def test_a_whole_page_question_gets_each_bullet_before_one_bullet_s_children(monkeypatch):
    """search.PAGE_BULLETS_FIRST: a long bullet is indexed one child at a time, each block
    opening with its parent's line; a whole page's answer takes each bullet's first block
    before that bullet's other children, in page order."""
    blocks = [
        NoteBlock("Vets", "Meetings\n  Clinical rounds every Monday at 08:15", 0),
        NoteBlock("Vets", "Meetings\n  Practice meeting on the first Wednesday", 1),
        NoteBlock("Vets", "Meetings\n  CPD lunch on the last Friday", 2),
        NoteBlock("Vets", "Got back from Cork on Sunday", 3),
        NoteBlock("Vets", "Got back from Cork on Su\u2026\n  the twins loved the star map", 4),
        NoteBlock("Vets", "Salary review in June", 5),
    ]
    with NotesIndex.build(blocks) as idx:
        assert [h.position for h in idx.search("tell me about Vets", k=3)] == [0, 3, 5, 1, 2]
        monkeypatch.setattr(search, "PAGE_BULLETS_FIRST", False)
        assert [h.position for h in idx.search("tell me about Vets", k=3)] == [0, 1, 2, 3, 4]


def test_a_block_s_key_and_todos_are_what_it_is_about():
    """ "finished" is in both blocks; the one whose key it is answers "the finished of ..."."""
    blocks = [
        NoteBlock("Books/The Midnight Library", "status: finished", 0),
        NoteBlock("Books/The Midnight Library", "finished: July 30th, 2026", 1),
        NoteBlock("Books/The Midnight Library", "Notes\n  Nora's library between life and death", 2),
        NoteBlock("Books/The Midnight Library", "Quotes\n  TODO copy the quote about regret", 3),
    ]
    with NotesIndex.build(blocks) as idx:
        assert idx.search("Remind me, what is the finished of The Midnight Library?", k=1)[0].position == 1
        assert idx.search("any open todos on The Midnight Library?", k=1)[0].position == 3


def test_a_word_in_a_page_s_title_outweighs_the_same_word_in_a_block_s_text():
    """PAGE_WEIGHT: "did the bees swarm?" is about the page Bees. Both blocks hold both
    words, one "bees" in its page title, the other twice in its text; with the title
    weighted like text (1.0) the Garden log block would win (the bm25 of these blocks
    was checked at both weights). "swarm" is in no title, so this is the bm25 path, not
    the page-from-the-top one."""
    blocks = [
        NoteBlock("Bees", "the swarm left the hive in May", 0),
        NoteBlock("Garden log", "bees swarm over the bees and the clover", 0),
        NoteBlock("Kitchen", "bread, butter and jam for breakfast", 0),
        NoteBlock("Kitchen", "soup on Sunday with leeks", 1),
        NoteBlock("Work", "call the plumber about the leak", 0),
        NoteBlock("Work", "quarterly review on Thursday", 1),
    ]
    with NotesIndex.build(blocks) as idx:
        hits = idx.search("did the bees swarm?", k=2)
        assert [(h.page, h.text) for h in hits] == [
            ("Bees", "the swarm left the hive in May"),
            ("Garden log", "bees swarm over the bees and the clover"),
        ]
        assert hits[0].score > hits[1].score > 0


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(0, 2),
            st.lists(
                st.sampled_from(
                    ["tide", "hall", "Zürich", "日本語", "a", "supercalifragilisticexpialidocious" * 2, "x" * 150]
                ),
                min_size=1,
                max_size=30,
            ),
        ),
        min_size=1,
        max_size=8,
    ),
    st.sampled_from([60, 100, 200]),
)
def test_long_blocks_are_cut_without_losing_a_word(outline, max_bytes):
    lines, depth = [], 0
    for want, words in outline:
        depth = min(want, depth + 1) if lines else 0
        lines.append("    " * depth + "- " + " ".join(words))
    page = roam.RoamPage("Long Page", "\n".join(lines))
    blocks = page_blocks(page, max_bytes)
    assert all(len(b.text.encode()) <= max_bytes for b in blocks), [len(b.text.encode()) for b in blocks]
    assert [b.position for b in blocks] == list(range(len(blocks)))
    written = " ".join(b.text for b in blocks)
    for word in " ".join(" ".join(w) for _, w in outline).split():
        assert word in written or all(part in written for part in _pieces(word, written)), word


def test_a_long_block_is_cut_between_children_and_a_child_keeps_the_lines_under_it():
    page = roam.RoamPage(
        "Dad",
        "- Health\n    - GP is Dr. Okafor at Westport Medical Centre\n"
        "    - on warfarin, INR check every second Tuesday\n        - last result 2.6 on 2 February 2027\n"
        "- Ring him on Sundays\n    - after the news",
    )
    texts = [b.text for b in page_blocks(page)]
    assert texts == [
        "Health\n  GP is Dr. Okafor at Westport Medical Centre",  # with the next child: past GROUP_BYTES
        "Health\n  on warfarin, INR check every second Tuesday\n    last result 2.6 on 2 February 2027",
        "Ring him on Sundays\n  after the news",  # short children stay with their parent
    ]
    assert len("\n".join(texts[:2]).encode()) > GROUP_BYTES


def _pieces(word: str, written: str) -> list[str]:
    """A word longer than a block is cut inside; its pieces, in order, are in the blocks."""
    pieces, rest = [], word
    while rest:
        n = next(n for n in range(len(rest), 0, -1) if rest[:n] in written)
        pieces.append(rest[:n])
        rest = rest[n:]
    return pieces


# ---------------------------------------------------------------- building, files, staleness


def test_in_memory_build_has_the_blocks(graph):
    blocks = [b for page in roam.iter_pages(graph) for b in page_blocks(page)]
    idx = NotesIndex.build(blocks)
    assert idx.path is None and len(idx) == len(blocks) and idx.stale_reason() is None
    assert idx.search("varroa")[0].page == "Bees"


def test_written_index_reopens_with_its_metadata(index, graph, tmp_path):
    path = tmp_path / "index" / "index.sqlite"
    with NotesIndex.open(path) as again:
        assert len(again) == len(index) and again.pages == 6
        assert again.meta["fingerprint"] == notes_fingerprint(graph)
        assert again.meta["source"] == graph.resolve().as_posix()
        assert again.search("marta birthday") == index.search("marta birthday")
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.sqlite"], "no temp files left"


def test_a_changed_page_makes_it_stale_and_a_rebuild_updates_it(index, graph, tmp_path):
    assert index.stale_reason() is None and not index.is_stale(graph)
    assert index.search("kombucha") == []
    page = graph / "Bees.md"
    page.write_text(page.read_text() + "- Started a kombucha scoby next to the hives.\n", encoding="utf-8")
    assert "changed" in index.stale_reason()
    rebuilt = index_folder(graph, tmp_path / "index" / "index.sqlite", progress=False)
    assert rebuilt.stale_reason() is None
    assert rebuilt.search("kombucha")[0].page == "Bees"
    (graph / "New page.md").write_text("- a new page\n", encoding="utf-8")
    assert rebuilt.is_stale(), "an added page makes it stale too"
    assert "notes in use are" in rebuilt.stale_reason(tmp_path), "another folder is not the one it indexed"
    (graph / "Marta.md").unlink()
    (graph / "New page.md").unlink()
    assert rebuilt.is_stale(), "a removed page makes it stale too"


def test_a_non_utf8_page_is_an_error_naming_the_file(graph, tmp_path):
    write_graph(graph, {"Broken.md": b"- caf\xe9 au lait\n"})
    target = tmp_path / "index.sqlite"
    with pytest.raises(roam.RoamError, match=r"Broken\.md: not UTF-8"):
        index_folder(graph, target, progress=False)
    assert not target.exists() and not list(tmp_path.glob(".index.sqlite.*")), "no half index, no temp file"


def test_a_failed_build_keeps_the_old_index(index, tmp_path):
    path = tmp_path / "index" / "index.sqlite"
    before = path.read_bytes()

    def blocks():
        yield NoteBlock("A", "alpha", 0)
        raise RuntimeError("killed mid-build")

    with pytest.raises(RuntimeError):
        NotesIndex.build(blocks(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in path.parent.iterdir()) == ["index.sqlite"]


def test_an_empty_folder_gives_an_empty_index(tmp_path):
    (tmp_path / "empty").mkdir()
    idx = index_folder(tmp_path / "empty", tmp_path / "empty.sqlite", progress=False)
    assert len(idx) == 0 and idx.pages == 0 and idx.search("anything at all") == []
    assert idx.stale_reason() is None
    index, line = open_for_chat(tmp_path / "empty.sqlite")
    assert index is None and "holds no notes" in line


def test_symlinks_leaving_the_notes_folder_are_not_followed(tmp_path):
    outside = write_graph(tmp_path / "outside", {"Secret.md": "- the vault code is 8831 swordfish\n"})
    notes = write_graph(tmp_path / "notes", {"Inside.md": "- an ordinary page about swordfish recipes\n"})
    os.symlink(outside / "Secret.md", notes / "Linked secret.md")
    os.symlink(outside, notes / "Linked folder")
    write_graph(notes, {"Sub/Real.md": "- a real page about sailing\n"})
    os.symlink(notes / "Sub" / "Real.md", notes / "Alias.md")  # a link that stays inside: harmless either way
    idx = index_folder(notes, progress=False)
    assert idx.search("vault code 8831") == [], "a page outside the notes folder was indexed"
    assert {h.page for h in idx.search("swordfish", k=10)} == {"Inside"}
    assert idx.search("sailing")[0].page in ("Sub/Real", "Alias")


def test_chat_start_rebuilds_a_stale_index_in_place_unless_told_not_to(graph, tmp_path):
    path = tmp_path / "index.sqlite"
    index_folder(graph, path, progress=False).close()
    (graph / "Bees.md").write_text("- hives:: 5\n- The new queen arrived in June.\n")
    index, line = open_for_chat(path, reindex=False)
    assert index is None and "is stale (the notes in" in line and "dvc repro index" in line
    index, line = open_for_chat(path)
    assert index is not None and "re-indexed" in line and "changed since it was built" in line, line
    with index:
        assert index.stale_reason() is None and "queen" in index.search("when did the queen arrive?")[0].text
    with NotesIndex.open(path) as again:
        assert again.stale_reason() is None, "rebuilt in place: the file on disk is current"
    index, line = open_for_chat(path)
    assert "re-indexed" not in line
    index.close()


@pytest.mark.parametrize("content", [None, b"", b"this is not a database at all" * 100, "sqlite-no-meta"])
def test_a_missing_or_corrupt_index_is_one_line_naming_the_file(tmp_path, content):
    path = tmp_path / "index.sqlite"
    if content == "sqlite-no-meta":
        import sqlite3

        sqlite3.connect(path).execute("CREATE TABLE t (x)").connection.commit()
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(NotesIndexError) as info:
        NotesIndex.open(path)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    index, line = open_for_chat(path)
    assert index is None and line.startswith("notes: off") and str(path) in line and "\n" not in line


# ---------------------------------------------------------------- the stage


def test_index_stage_writes_the_index_and_a_summary(tmp_path):
    root = tmp_path / "repo"
    write_graph(root / ".roam-data")
    (root / "params.yaml").write_text("{}\n")
    env = {**os.environ, "BYTECHAT_ROOT": str(root), "PYTHONPATH": str(REPO)}

    def index_stage() -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(REPO / "stages" / "index.py")],
            cwd=root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    done = index_stage()
    assert done.returncode == 0, done.stderr
    summary = json.loads((root / "artifacts/notes/summary.json").read_text())
    assert summary["source"] == ".roam-data" and summary["pages"] == 6 and summary["blocks"] == 14
    assert summary["example_graph"] is False and "EXAMPLE" not in done.stderr
    assert "6 pages, 14 blocks" in done.stdout
    with NotesIndex.open(root / "artifacts/notes/index.sqlite") as idx:
        assert idx.search("hives")[0].page == "Bees"

    write_graph(root / ".roam-data", {"Bad.md": b"\xff\xfe- not utf-8\n"})
    failed = index_stage()
    assert failed.returncode == 1
    assert failed.stderr.strip().splitlines()[-1].startswith("error: ") and "Bad.md" in failed.stderr
    assert "Traceback" not in failed.stderr


# ---------------------------------------------------------------- retrieval for chat


def test_retrieval_uses_the_newest_message_then_the_previous_one(index):
    ask = [{"role": "user", "content": "how many hives do I have?"}]
    hits = retrieve_for_chat(index, ask, k=3)
    assert hits[0].page == "Bees"
    follow_up = [*ask, {"role": "assistant", "content": "Three."}, {"role": "user", "content": "and Marta's birthday?"}]
    hits = retrieve_for_chat(index, follow_up, k=3)
    assert {h.page for h in hits} == {"Marta"}, "a new name after 'and': the old topic's blocks stay out"
    tea = [
        {"role": "user", "content": "when is Marta's birthday?"},
        {"role": "assistant", "content": "12 March"},
        {"role": "user", "content": "and her tea and climbing?"},
    ]
    assert {h.page for h in retrieve_for_chat(index, tea, k=3)} == {"Marta"}
    small_talk = [*ask, {"role": "assistant", "content": "Three."}, {"role": "user", "content": "thanks!"}]
    assert retrieve_for_chat(index, small_talk) == []
    assert with_notes(small_talk, []) == small_talk, "no terms: no notes section, the conversation as it is"
    uncovered = [*ask, {"role": "assistant", "content": "Three."}, {"role": "user", "content": "my shoe size?"}]
    assert retrieve_for_chat(index, uncovered) == [], "nothing found: not the previous topic's notes"


def test_small_talk_gets_no_notes_even_where_the_notes_say_its_words(tmp_path):
    pages = {
        "Routine.md": "- Morning: a run at 7, then coffee.\n- Afternoon: a walk after lunch.\n- Tired by 22:00 today.\n"
    }
    with indexed(tmp_path, pages) as idx:
        for said in ("good afternoon!", "Good morning to you", "hey, how are you today?", "I'm so tired today"):
            talk = [{"role": "user", "content": said}]
            assert idx.search(said), f"the notes hold {said!r}'s words: only the small-talk rule keeps them out"
            assert retrieve_for_chat(idx, talk) == [] and with_notes(talk, []) == talk, said
        for asked in ("what do I do in the morning?", "good morning, what do I do in the afternoon?"):
            assert retrieve_for_chat(idx, [{"role": "user", "content": asked}])[0].page == "Routine", asked


def test_the_small_talk_the_model_is_taught_is_small_talk_and_no_dev_question_is():
    taught = [prompt for prompt in everyday.chat_prompts() if query_terms(prompt)]  # "hi" has none: no search
    assert taught and all(is_small_talk(prompt) for prompt in taught)
    assert not any(is_small_talk(p) for p in everyday.all_prompts() if "capital" in p or "weather" in p), (
        "a refusal's question is searched: the notes may answer it"
    )
    probe = (REPO / "data" / "small-talk-probe.txt").read_text(encoding="utf-8").splitlines()
    eval_prompts = {" ".join(words(p)) for p in EVERYDAY_PROMPTS}
    assert probe and not [line for line in probe if " ".join(words(line)) in eval_prompts], (
        "the probe that chose SMALL_TALK_MATCH shares no line with the eval's small talk"
    )
    names = ("Jonas", "the bees", "Car", "Marta", "sourdough")  # short names: "tell me about Jonas" ~ "tell me a joke"
    page_questions = [t.format(title=n, word=n) for t in (*PAGE_TEMPLATES, *KEYWORD_TEMPLATES) for n in names]
    assert not [q for q in page_questions if is_small_talk(q)]
    for folder in (REPO / "data" / "unseen-notes", REPO / "data" / "new-user-notes"):
        rows = [json.loads(line) for line in (folder / "questions.jsonl").read_text(encoding="utf-8").splitlines()]
        asked = [r["question"] for r in rows if r["split"] == "dev"]
        assert asked and not [q for q in asked if is_small_talk(q)], folder.name


def test_a_turn_answered_from_notes_sees_the_notes_then_the_turns_that_fit(index):
    talk = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "how many hives do I have?"},
    ]
    prompt = with_notes(talk, retrieve_for_chat(index, talk))
    assert [m["role"] for m in prompt] == ["system", "user", "assistant", "user"] and prompt[1:] == talk[1:]
    assert prompt[0]["content"].startswith("Be brief.\nNotes:\n")
    tight = len(format_chat([prompt[0], talk[-1]]).encode("utf-8"))
    assert with_notes(talk, retrieve_for_chat(index, talk), budget_bytes=tight) == [prompt[0], talk[-1]], (
        "old turns give way first: the notes and the newest message stay"
    )


def test_retrieval_keeps_the_hits_that_fit_the_budget(index):
    ask = [{"role": "user", "content": "sourdough starter feeding hungry gus"}]
    everything = retrieve_for_chat(index, ask, k=3)
    assert len(everything) == 3
    one = len(render_notes([everything[0].block]).encode())
    assert retrieve_for_chat(index, ask, k=3, budget_bytes=one) == everything[:1]
    assert retrieve_for_chat(index, ask, k=3, budget_bytes=one - 1)[:1] != everything[:1]


def test_with_notes_uses_the_trained_layout_and_keeps_the_system_prompt(index):
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "how many hives?"}]
    hits = retrieve_for_chat(index, messages)
    prompt = with_notes(messages, hits)
    assert prompt[0] == {"role": "system", "content": "Answer briefly.\n" + render_notes([h.block for h in hits])}
    assert prompt[1:] == messages[1:] and messages[0]["content"] == "Answer briefly.", "input untouched"
    assert prompt[0]["content"].endswith(f"[Bees] {hits[0].text}"), "the best block is placed last"
    bare = with_notes([{"role": "user", "content": "quantum chromodynamics"}], [])
    assert bare[0] == {"role": "system", "content": NO_NOTES}, "terms but no hits: 'none found'"
    assert sources_payload(hits)[0] == {
        "page": "Bees",
        "text": hits[0].text,
        "score": round(hits[0].score, 4),
        "link": "",
    }


def test_notes_budget_leaves_room_for_the_question_and_the_reply():
    messages = [{"role": "user", "content": "x" * 40}]
    budget = notes_budget(512, messages)
    assert budget == 512 * 3 // 4 - len("user: " + "x" * 40 + "\nassistant: ") - len("system: \n")
    assert notes_budget(64, messages) == 0
    with_system = [{"role": "system", "content": "be brief"}, *messages]
    assert notes_budget(512, with_system) == 384 - len("system: be brief\nuser: " + "x" * 40 + "\nassistant: ") - 1


def test_hit_without_block_fields_still_builds():
    assert Hit("P", "t", 1.0).block == NoteBlock("P", "t", 0)


# ---------------------------------------------------------------- hybrid search (issue 28)


def test_a_typo_finds_the_block_through_the_notes_own_words(index):
    assert index.search("how often do I check for varoa?")[0].text.startswith("Varroa check")
    assert index.search("what ratio for the sourdogh feeding?")[0].page == "Sourdough Starter"


def test_a_misspelt_way_of_asking_is_not_a_topic(index):
    assert index.topic_words("wen is martas birthday") == ["martas", "birthday"]
    assert index.search("wen is martas birthday")[0].text == "birthday: 12 March"
    assert index.topic_words("wat r the hives") == ["hives"]


def test_a_contraction_typed_without_its_apostrophe_is_a_way_of_asking(tmp_path):
    """FTS5 stems "whats" to "what": kept as a topic word it counted against every block
    without it, so with two typos besides ("numbr", "alotment") the block that answers
    fell below the evidence rule and a page that asks "what" won."""
    pages = {
        "Allotment.md": "- plot: 14, next to the water tap\n- Rhubarb by the shed\n",
        "Piranesi.md": "- What didn't work: the plot drags\n",
    }
    with indexed(tmp_path, pages) as idx:
        assert idx.topic_words("whats the plot numbr of my alotment? dont know") == ["plot", "numbr", "alotment"]
        assert idx.search("whats the plot numbr of my alotment?")[0].text.startswith("plot: 14")


def test_a_word_form_or_compound_the_notes_write_differently(tmp_path):
    pages = {
        "Study.md": "- Bookshelves from the flea market, oak.\n- Desk lamp: brass.\n",
        "Pilot.md": "- weight:: 27 kg at the vet's check on 29 January\n- Walks: Barna Woods\n",
    }
    with indexed(tmp_path, pages) as idx:
        assert idx.search("where did the shelf come from?")[0].text.startswith("Bookshelves")
        assert idx.search("when was Pilot last weighed?")[0].text.startswith("weight: 27 kg")


def test_family_words_reach_the_ones_the_notes_use(tmp_path):
    """People title a page "Dad" and ask about "my father"; write "married to" and ask
    for a husband. A family word matches nothing else."""
    pages = {
        "Dad.md": "- birthday:: 30 October\n- Retired postman\n",
        "Ines.md": "- Married to Tom, who restores bikes.\n- Lives downstairs with two cats\n",
    }
    with indexed(tmp_path, pages) as idx:
        assert idx.search("when is my father's birthday?")[0].text == "birthday: 30 October"
        assert idx.search("who is Ines's husband?")[0].text.startswith("Married to Tom")
        assert idx.search("what does my uncle do?") == []


def test_a_paraphrase_that_shares_the_topic_word_is_found(index):
    """No coverage rule: one word the notes do not use no longer throws the block away."""
    hits = index.search("what kind of tea does Marta drink?")
    assert hits and hits[0].text == "Likes green tea and climbing."


def test_a_question_about_nothing_in_the_notes_finds_nothing(index):
    for question in ("what's my blood type?", "when is the boiler service due?", "who is my dentist?"):
        assert index.search(question) == [], question


def test_a_pronoun_follow_up_keeps_the_topic_and_a_new_topic_does_not(index):
    first = [{"role": "user", "content": "what did I write about the sourdough starter?"}]
    first.append({"role": "assistant", "content": "Its name is Gus."})
    follow = [*first, {"role": "user", "content": "how do I feed it?"}]
    assert retrieve_for_chat(index, follow)[0].page == "Sourdough Starter"
    bare = [*first, {"role": "user", "content": "and what smell does it get?"}]
    assert "acetone" in retrieve_for_chat(index, bare)[0].text
    only_pronoun = [*first, {"role": "user", "content": "who wrote that?"}]
    assert {h.page for h in retrieve_for_chat(index, only_pronoun)} == {"Sourdough Starter"}
    new_topic = [*first, {"role": "user", "content": "what's my passport number?"}]
    assert all(h.page != "Sourdough Starter" for h in retrieve_for_chat(index, new_topic))
    closed = [*first, {"role": "user", "content": "thanks, that's all"}]
    assert retrieve_for_chat(index, closed) == []


def test_a_follow_up_in_words_no_note_uses_asks_about_the_topic(index):
    """ "and the mites?" (or "what mites do they get?") matches no block, so it is searched
    by the conversation's topic instead of finding nothing. A message that is not a
    follow-up, or asks a question of its own after "and", still finds nothing."""
    first = ("how many hives do I have?", "From [Bees] hives: 3")
    assert {h.page for h in after_one_exchange(index, *first, "and the mites?")} == {"Bees"}
    assert {h.page for h in after_one_exchange(index, *first, "what mites do they get?")} == {"Bees"}
    assert after_one_exchange(index, *first, "what mites do I have?") == []
    assert after_one_exchange(index, *first, "and what's my blood type?") == []  # "type": a word of no note either


def test_a_pronoun_follow_up_puts_the_person_asked_about_first(tmp_path):
    """After "who is Ines?", "when did she start?" gets Ines's dated block, not the pages
    whose blocks say "started" (they match the follow-up's own word better)."""
    with indexed(
        tmp_path,
        {
            "Ines.md": "- relation: my landlady since June 2024\n- Lives downstairs with two cats\n",
            "Pottery.md": "- started: January 2026, Tuesday evenings\n",
            "Choir.md": "- started: autumn 2025 with the altos\n",
        },
    ) as idx:
        hits = after_one_exchange(idx, "who is Ines?", "Your landlady.", "when did she start?")
        assert hits and hits[0].page == "Ines" and "June 2024" in hits[0].text, [(h.page, h.text) for h in hits]
        alone = idx.search("when did the pottery course start?", k=1)  # no pronoun: the words decide
        assert alone and alone[0].page == "Pottery"


def test_a_when_question_prefers_the_block_with_a_date(tmp_path):
    with indexed(
        tmp_path, {"Dentist.md": "- Okafor: very gentle\n- Okafor check-up on 14 March at 09:30, bring the form\n"}
    ) as idx:
        assert "14 March" in idx.search("when do I see Okafor?", k=1)[0].text
        assert "gentle" in idx.search("what is Okafor like?", k=1)[0].text


def test_a_question_word_inside_a_clause_does_not_ask(tmp_path):
    """ "who does the watering when I'm away?" asks who: "when" opens a clause, so the
    block with a date is not what it wants. "who and when?" asks both."""
    pages = {"Balcony.md": "- Watering: every evening in July and August\n- When I'm away, Femke does the watering.\n"}
    with indexed(tmp_path, pages) as idx:
        assert idx.search("who does the watering when I'm away?", k=1)[0].text.startswith("When I'm away")
    assert answer_kind("who waters them when I'm away?") is None  # retrieval's kinds leave "who" out
    assert answer_kind("when do I water them?") is not None
    assert answer_kind("who is coming, and when?") is not None


def test_a_date_is_a_month_day_or_year_not_a_word_a_month_opens():
    when = answer_kind("when does the insurance renew?")
    assert when.search("renews on 1 March") and when.search("Mar 2025") and when.search("since 2019")
    assert not when.search("Married to Daan") and not when.search("a novel") and not when.search("policy 7731")


def test_an_amount_is_money_or_a_number_and_what_it_counts_not_a_date():
    much = answer_kind("how much is it a night?")
    assert much.search("€96 a night") and much.search("14 jars") and much.search("200 ml")
    assert not much.search("21–24 April") and not much.search("on 3 May") and not much.search("house 41")
    assert much.search("a 3 marathon plan")  # a word a month's name opens is no month


def test_who_asks_for_a_name_inside_a_sentence():
    """answer_kinds.span_kind: the answer head's kinds are retrieval's and, for "who", a NAME."""

    def names(text):
        return [m.group(0) for m in NAME.finditer(text)]

    assert names("The starter came from Ruth, fed on 2 May.") == ["Ruth"]
    assert names("mentor: Ada Lovelace") == ["Ada Lovelace"]
    assert names("Lessons on Tuesdays, from March") == []  # weekdays and months are dates
    assert names("Jonas came round") == []  # a sentence's first word
    assert names("made Recipes/Risotto with Priya") == ["Priya"]
    assert span_kind("who taught me to knit?") is NAME
    assert span_kind("and who waters them when I'm away?") is NAME
    assert span_kind("when did Ruth start?") is answer_kind("when did Ruth start?") is not None
    assert span_kind("what does Ruth do?") is None


def test_a_whole_page_question_gets_the_page_from_the_top(index):
    hits = index.search("tell me about the bees", k=3)
    assert [(h.page, h.position) for h in hits] == [("Bees", 0), ("Bees", 1), ("Bees", 2)]
    hits = index.search("give me an overview of the bees", k=3)  # "give me" asks, as "tell me" does
    assert [(h.page, h.position) for h in hits] == [("Bees", 0), ("Bees", 1), ("Bees", 2)]


def test_an_inflected_way_of_asking_is_not_a_topic(tmp_path):
    with indexed(
        tmp_path, {"Study.md": "- Desk lamp: brass\n", "Log.md": "- Jonas kept mentioning his new bike\n"}
    ) as idx:
        assert idx.topic_words("any note mentioning the lamp?") == ["lamp"]
        assert [h.page for h in idx.search("any note mentioning the lamp?")] == ["Study"]
    assert query_terms("how old is Ines's son?") == ["ines", "son"]  # "how old" asks for a number
    assert query_terms("how old is my old bike?") == ["old", "bike"]
    assert query_terms("give me the wifi code") == ["wifi", "code"]  # "give me" is a way of asking
    assert query_terms("what did I give Ines?") == ["give", "ines"]


def test_an_acknowledgement_before_a_follow_up_does_not_close_the_topic():
    """ "ok. and its plot" goes on with the conversation; "thanks, that's all" closes it."""
    from bytechat.notes.query import is_follow_up, refers_back

    for going_on in ("ok. and its plot", "great, and who teaches it?", "ok what about her address", "and nuts?"):
        assert is_follow_up(going_on), going_on
    assert refers_back("ok. and its plot") and not refers_back("and nuts?")
    for closing in ("thanks, that's all", "ok thanks", "thanks! bye", "okay, so what is it?"):
        assert not refers_back(closing) and not is_follow_up(closing), closing


def test_a_hit_says_what_is_asked_beyond_a_page_name(tmp_path):
    """A near miss (the page exists, the fact does not) finds nothing: every block of
    Ruth's page is Ruth's, and none says a blood group. A question word's kind of text is
    what it asks too ("how long ... cook?": "40 minutes")."""
    pages = {
        "Ruth.md": "- birthday:: 3 May\n- Plays five-a-side on Tuesdays\n",
        "Soup.md": "- Simmer for 40 minutes\n- Serves 4\n",
        "Log.md": "- Ruth came round for soup\n",
    }
    with indexed(tmp_path, pages) as idx:
        assert idx.search("what's Ruth's blood group?") == []
        assert [h.text for h in idx.search("when is Ruth's birthday?")][:1] == ["birthday: 3 May"]
        assert [h.text for h in idx.search("how long does the soup cook?")] == ["Simmer for 40 minutes"]
        assert {h.page for h in idx.search("tell me about Ruth")} == {"Ruth"}  # nothing asked beyond her
        # English's commonest words ask nothing a block must say ("use"), the rest do
        assert "Soup" in {h.page for h in idx.search("what do I use for the soup?")}


def test_a_compound_that_is_asked_is_said_whole(tmp_path, monkeypatch):
    """A compound asked ("blood type") is not said by a block that says "type" alone (nor
    "spare key" by a "spare year"), while a name beside an asked word ("the Skoda runs on ...") is no compound,
    a light word is said on its own ("call the garage"), and a compound written as the page's
    name ("bookclub" for Book Club) is a page, not a compound."""
    pages = {
        "Habits.md": "- type:: #habits\n- Walk every morning\n",
        "Reading List.md": "- Gödel, Escher, Bach, for when I have a spare year\n",
        "Car.md": "- model: Skoda Octavia, diesel\n",
        "Log.md": "- TODO call Brink about the rattle\n",
        "Book Club.md": "- meets: first Thursday, 19:30\n",
    }
    with indexed(tmp_path, pages) as idx:
        assert idx.search("what is my blood type?") == []
        assert idx.search("have I got anything on the spare key?") == []
        assert idx.search("which type of habits do I track?")[0].page == "Habits"  # one word asked, said
        assert idx.search("what does the Skoda run on?")[0].page == "Car"
        assert idx.search("why did I need to call Brink?")[0].page == "Log"
        assert idx.search("wen does bookclub meet")[0].text.startswith("meets")
        monkeypatch.setattr(search, "SAY_WHOLE_PHRASE", False)  # word by word, "type" says "blood type"
        monkeypatch.setattr(search, "SAY_THE_HEAD", False)  # (which asks "blood" of "what is my blood ...")
        assert [h.page for h in idx.search("what is my blood type?")] == ["Habits"]


def test_whose_fact_is_asked_is_not_what_is_asked(tmp_path, monkeypatch):
    """The question "When is Kasia's birthday?" asks a birthday of Kasia: Oskar's block that names
    her and a Saturday does not say it. The kind asked (a date for "when") stands in for the
    asked word only on a page the question names ("how long does the soup cook?")."""
    pages = {
        "Oskar.md": "- birthday:: 22 May\n- Partner Kasia teaches Polish at the Saturday school\n",
        "Soup.md": "- Simmer for 40 minutes\n",
    }
    with indexed(tmp_path, pages) as idx:
        assert idx.search("When is Kasia's birthday?") == []
        assert [h.text for h in idx.search("When is Oskar's birthday?")][:1] == ["birthday: 22 May"]
        assert [h.text for h in idx.search("what does Kasia teach?")][:1] == [
            "Partner Kasia teaches Polish at the Saturday school"
        ]
        assert [h.text for h in idx.search("how long does the soup cook?")] == ["Simmer for 40 minutes"]
        monkeypatch.setattr(search, "SAY_NOT_OWNER", False)
        monkeypatch.setattr(search, "KIND_ON_NAMED_PAGE", False)
        assert [h.page for h in idx.search("When is Kasia's birthday?")] == ["Oskar"]


def test_a_count_is_said_with_what_it_counts(tmp_path, monkeypatch):
    """The question "how much salt goes in the dal?" is not answered by the dal's "250 g red lentils":
    an amount is no answer unless the block says what is counted. A count of a light word
    ("how many people") is left to the kind, since notes say it otherwise ("serves 4")."""
    pages = {"Dal.md": "- 250 g red lentils in 900 ml water\n- 1 tsp salt, added at the end\n- serves:: 4\n"}
    with indexed(tmp_path, pages) as idx:
        assert [h.text for h in idx.search("how much salt goes in the dal?")][:1] == ["1 tsp salt, added at the end"]
        assert idx.search("how much sugar goes in the dal?") == []
        assert "serves: 4" in [h.text for h in idx.search("how many people does the dal feed?")]
        monkeypatch.setattr(search, "SAY_THE_COUNTED", False)
        assert idx.search("how much sugar goes in the dal?") != []


def test_a_question_for_a_kind_of_text_is_answered_by_a_block_that_holds_it(tmp_path, monkeypatch):
    """SAY_THE_KIND: "when was the choir founded?" is not answered by the choir's name line, which
    says no date; "how many altos ...?" not by "next to the altos", which says no number.
    The block that holds the kind still answers, and a question that asks no kind is as before."""
    pages = {"Choir.md": "- name:: Spaarnestem, a mixed choir\n- my voice: baritone, next to the altos\n"}
    with indexed(tmp_path, pages) as idx:
        assert idx.search("when was Spaarnestem founded?") == []
        assert idx.search("how many altos are there in the choir?") == []
        assert [h.text for h in idx.search("what is Spaarnestem?")][:1] == ["name: Spaarnestem, a mixed choir"]
        monkeypatch.setattr(search, "SAY_THE_KIND", False)
        assert idx.search("when was Spaarnestem founded?") != []
    with indexed(tmp_path / "b", {"Choir.md": "- Spaarnestem was founded in 1987\n"}) as idx:
        assert [h.text for h in idx.search("when was Spaarnestem founded?")] == ["Spaarnestem was founded in 1987"]


def test_the_noun_a_question_asks_for_is_said(tmp_path, monkeypatch):
    """SAY_THE_HEAD: "which platform does the train leave from?" is not answered by the train
    line, which says no platform, nor "what's the rent at the new office?" by its address; a
    block that says the noun, a compound of it ("walnuts" for "what nuts") or the notes'
    abbreviation of it ("booking ref" for "booking reference") still answers."""
    pages = {
        "Trip.md": "- Trains\n    - leave København H at 09:40\n- back: LJU on 24 April, booking ref KX7P2M\n",
        "Office.md": "- new office: Kanaalweg 220, third floor\n",
        "Femke.md": "- allergic to walnuts and pecans\n",
    }
    with indexed(tmp_path, pages) as idx:
        assert idx.search("which platform does the train leave from?") == []
        assert idx.search("what's the rent at the new office?") == []
        assert [h.text for h in idx.search("what nuts is Femke allergic to?")] == ["allergic to walnuts and pecans"]
        ref = [h.text for h in idx.search("what's the booking reference for the trip back?")]
        assert ref[:1] == ["back: LJU on 24 April, booking ref KX7P2M"]
        assert [h.text for h in idx.search("which train do I take?")][:1] == ["Trains\n  leave København H at 09:40"]
        monkeypatch.setattr(search, "SAY_THE_HEAD", False)
        assert idx.search("which platform does the train leave from?") != []


def test_the_day_a_question_names_is_said(tmp_path, monkeypatch):
    """SAY_THE_DAY: "what was the sea temperature on Christmas Day?" is not answered by the 1 January
    dip: a month, holiday or year the question names is said by the block or its page, as
    whose fact it is ("Kasia's") must be."""
    pages = {"Sea.md": "- Water temperature log\n    - 1 January dip: 9.1 °C\n"}
    with indexed(tmp_path, pages) as idx:
        assert idx.search("what was the sea temperature on Christmas Day?") == []
        assert "9.1 °C" in idx.search("what was the sea temperature in January?")[0].text
        monkeypatch.setattr(search, "SAY_THE_DAY", False)
        assert idx.search("what was the sea temperature on Christmas Day?") != []


def test_a_block_naming_a_place_rises_for_where(tmp_path, monkeypatch):
    """WHO_WHERE_RISE: "and where does he work?" after "when is Tomasz's birthday?" gets his job
    line, which says where (`at Vermeer & Kok`), before the birthday the conversation was on;
    a season is no place ("in spring")."""
    pages = {"Tomasz.md": "- birthday:: 23 August\n- job:: structural engineer at Vermeer & Kok\n- likes:: trams\n"}
    topic = ["when is Tomasz's birthday?", "From [Tomasz] 23 August"]
    with indexed(tmp_path, pages) as idx:
        assert idx.search("and where does he work?", topic=topic)[0].text == "job: structural engineer at Vermeer & Kok"
        monkeypatch.setattr(search, "WHO_WHERE_RISE", False)
        assert idx.search("and where does he work?", topic=topic)[0].text == "birthday: 23 August"
    assert not [m.group("place") for m in PLACE.finditer("Joost moves to Ghent in spring")]


def test_a_fragment_is_a_follow_up(tmp_path, monkeypatch):
    """FRAGMENTS: "starting when?" after "what did we decide in February?" asks it of that
    decision, as "when does it start?" would: a question word and one more word have no subject
    of their own. A fragment without a question word ("passport number?") is a question of its own."""
    assert query.refers_back("starting when?") and query.refers_back("how much?")
    assert not query.refers_back("passport number?") and not query.refers_back("when?")
    pages = {
        "Vets.md": "- 3 February 2027: agreed to trial online booking from 1 March\n",
        "Oskar.md": "- Their son Filip starts school in September\n",
    }
    topic = ["what did we decide in February?", "From [Vets] we agreed to trial online booking."]
    with indexed(tmp_path, pages) as idx:
        assert idx.search("starting when?", topic=topic)[0].page == "Vets"
        monkeypatch.setattr(query, "FRAGMENTS", False)
        assert idx.search("starting when?", topic=topic)[0].page == "Oskar"


def test_a_question_for_an_age_wants_one(tmp_path):
    """ "how old" asks for an age ("Zofia (9)", "turns 78", "born in 2021"), not a birthday's day
    of the month; "which days" asks for days, as "which day" does ("Mondays and Fridays")."""
    assert answer_kinds.answer_kind("how old is Zofia?").search("Zofia (9), plays the cello")
    assert answer_kinds.answer_kind("how old is Dad?").search("birthday: 30 October, turns 78 this year")
    assert not answer_kinds.answer_kind("how old is Femke?").search("birthday: 2 February")
    assert not answer_kinds.answer_kind("how old is it?").search("the house is 4 km away")
    assert answer_kinds.answer_kind("which days are we in?").search("hot-desking on Mondays and Fridays")
    pages = {"Femke.md": "- birthday:: 2 February\n- dark chocolate, the 85% kind\n"}
    with indexed(tmp_path, pages) as idx:
        assert idx.search("how old is Femke turning?") == []


def test_phrases_are_runs_of_kept_words_broken_by_names():
    assert query.phrases("what is my blood type?", ["blood", "type"]) == [["blood", "type"]]
    assert query.phrases("what fuel does the Skoda run on?", ["fuel", "skoda", "run"]) == [["fuel"], ["run"]]
    assert query.phrases("Blood type of Ruth's kid", ["blood", "type", "kid"]) == [["blood", "type"], ["kid"]]


def test_a_common_word_is_meant_as_typed(tmp_path):
    """A common word ("key") is not a misspelt "hey", and "pension" is not a typo of "tension"."""
    with indexed(tmp_path, {"Le Guin.md": "- Quiet books, a lot of tension.\n"}) as idx:
        assert idx.topic_words("where's the spare key?") == ["spare", "key"]
        assert idx.search("have I got anything on my pension number?") == []
        assert idx.search("any quiet books with tenson?")[0].page == "Le Guin"  # a real typo still is one


def test_a_compound_finds_the_two_words_the_notes_write(tmp_path):
    with indexed(tmp_path, {"Book Club.md": "- host: Ana\n- meets: first Thursday, 19:30\n"}) as idx:
        assert idx.search("wen does bookclub meet")[0].text.startswith("meets")


def test_a_fact_question_naming_a_page_gets_the_block_that_answers_first(tmp_path):
    with indexed(
        tmp_path,
        {
            "Honey Granola.md": "- makes: one big jar\n- oven: 160 °C\n- Wet\n  - 4 tbsp honey, warmed\n",
            "Move.md": "- date: 3 May\n- van: the big one\n- TODO book the van\n",
            "Balcony.md": "- pots: 4, on the left\n- sun: from 14:00\n- watering: every second day\n",
        },
    ) as idx:
        assert "4 tbsp honey" in idx.search("how much honny in the granola?")[0].text
        assert idx.search("what do I still have to do for the move?")[0].text.startswith("TODO")
        assert idx.search("how often for the balcony?")[0].text.startswith("watering")
        assert idx.search("tell me about the move", k=1)[0].text.startswith("date")  # a whole page: from the top


def test_a_pronoun_follow_up_is_not_sent_to_a_page_its_own_word_names(tmp_path):
    with indexed(
        tmp_path,
        {"Tomasz.md": "- birthday: 23 August\n- job: engineer at Vermeer & Kok\n", "Work.md": "- moving day: Monday\n"},
    ) as idx:
        hits = after_one_exchange(idx, "when is Tomasz's birthday?", "23 August.", "and where does he work?")
        assert hits and hits[0].page == "Tomasz", [(h.page, h.text) for h in hits]
        assert idx.search("where do I work?")[0].page == "Work"  # no pronoun: the page it names


def test_a_follow_up_on_the_page_asks_for_something_in_it(tmp_path):
    """ "and which mushrooms?" after the risotto's rice names only the page's title words,
    yet asks for the block that says mushrooms, not the page from the top again; asked
    first, the same words are a whole-page question."""
    risotto = "- serves: 4\n- time: 40 minutes\n- Ingredients\n  - 320 g arborio rice\n  - 400 g chestnut mushrooms\n"
    with indexed(tmp_path, {"Mushroom Risotto.md": risotto + "- Method\n  - toast the rice first\n"}) as idx:
        hits = after_one_exchange(
            idx, "what rice do I use for the risotto?", "320 g arborio rice.", "and which mushrooms?"
        )
        assert "chestnut mushrooms" in hits[0].text and len(hits) == 3, [h.text for h in hits]
        alone = idx.search("which mushrooms?", k=3)
        assert alone[0].text.startswith("serves") and len(alone) > 3  # the whole page (4 blocks)


def test_a_follow_up_about_the_reply_finds_what_the_reply_named(tmp_path):
    """After a reply naming the Fauré, "how long did I practise it?" gets the journal
    block about the Fauré, not the choir page the question named."""
    with indexed(
        tmp_path,
        {
            "Choir.md": "- learning: the Fauré, second verse\n- fee: €18 a month\n",
            "December 6th, 2026.md": "- Practised the Fauré for 40 minutes\n",
            "Piano.md": "- practise: scales, 10 minutes\n",
        },
    ) as idx:
        hits = after_one_exchange(
            idx, "what am I learning for choir?", "The Fauré, the second verse.", "how long did I practise it?"
        )
        assert hits and hits[0].page == "December 6th, 2026", [(h.page, h.text) for h in hits]


def test_a_question_word_prefers_the_block_holding_what_it_asks_for(tmp_path):
    """ "how long" wants a duration, "what time" a time of day, "what temperature"
    degrees, "how much" an amount: not just any number on the page."""
    with indexed(
        tmp_path,
        {
            "Stew.md": "- Ingredients\n  - 500 g beef\n  - 2 onions\n- time: 90 minutes\n- oven: 160 °C\n",
            "Ferry.md": "- cabin 12 on deck 4\n- leaves Hull at 20:30\n",
            "Trip.md": "- Hotel\n  - Vesterbro Hus, Istedgade 38, four nights\n- budget: €950, of which €420 for the hotel\n",
        },
    ) as idx:
        assert idx.search("how long for the stew?")[0].text == "time: 90 minutes"
        assert idx.search("how hot for the stew?")[0].text == "oven: 160 °C"
        assert idx.search("what time does the ferry go?")[0].text == "leaves Hull at 20:30"
        assert idx.search("how much is the hotel?")[0].text.startswith("budget"), "a house number is no amount"


@pytest.mark.parametrize(
    ("text", "found"),
    [
        ("what happened on 3 December?", [(12, 3, None)]),
        ("anything on Dec 3rd", [(12, 3, None)]),
        ("the 15th of February 2027", [(2, 15, 2027)]),
        ("May 5, 2026 and June 1st", [(5, 5, 2026), (6, 1, None)]),
        ("on 31 February", []),
        ("in May 2020", []),
    ],
)
def test_a_question_s_days_are_read_in_any_order(text, found):
    assert [(d.month, d.day, d.year) for d in day_mentions(text)] == found


def test_a_day_named_in_a_question_finds_that_day_s_page(tmp_path):
    with indexed(
        tmp_path,
        {
            "December 3rd, 2026.md": "- Made soup for Tomasz\n- cello exam went well\n",
            "December 3rd, 2025.md": "- First snow\n",
            "December 1st, 2026.md": "- DONE pay the choir fee for December\n",
        },
    ) as idx:
        hits = idx.search("what happened on 3 December?")
        assert {h.page for h in hits} == {"December 3rd, 2026"}, [(h.page, h.text) for h in hits]
        assert idx.search("what did I write on Dec 3rd 2025?")[0].text == "First snow"
        assert idx.search("what happened on 9 December?") == []  # no page for that day


def test_whose_fact_is_asked_must_be_named(tmp_path):
    """ "when is my mum's birthday?" is not answered by a friend's birthday."""
    with indexed(
        tmp_path,
        {"Femke.md": "- birthday: 2 February\n- job: midwife\n", "Rust.md": "- Deriving Debug saves boilerplate.\n"},
    ) as idx:
        assert idx.search("when is my mum's birthday?") == []
        assert idx.search("when is Femke’s birthday?")[0].text == "birthday: 2 February"
        assert idx.search("when is the birthday?")[0].page == "Femke"  # no owner named: any birthday
        assert idx.search("when is the boiler service?") == []  # "boilerplate" is another word
    assert possessors("the Jones' house and Tomasz's van, what's that?") == ["jones", "tomasz"]


# ---------------------------------------------------------------- links to the block (issue 24)


def _first_hit(folder: Path, tmp_path: Path, question: str) -> Hit:
    with index_folder(folder, tmp_path / f"{folder.name}.sqlite", progress=False) as idx:
        return idx.search(question, k=1)[0]


def test_each_format_links_its_sources_to_the_block(tmp_path, monkeypatch):
    examples = REPO / "examples"
    graph = tmp_path / "My Graph"
    shutil.copytree(examples / "logseq", graph)
    (graph / "pages" / "Kettle.md").write_text("- descaled on Sunday\n  id:: 65a1c3a2-0000-4b1a-9c2d-3e5f7a9b1c0d\n")
    logseq = _first_hit(graph, tmp_path, "when did I descale the kettle?")
    assert logseq.link == "logseq://graph/My%20Graph?block-id=65a1c3a2-0000-4b1a-9c2d-3e5f7a9b1c0d", logseq.link
    page_only = _first_hit(graph, tmp_path, "where does Wren live?")
    assert page_only.uid == "" and page_only.link == "logseq://graph/My%20Graph?page=Wren", "no id:: -> the page"
    obsidian = _first_hit(examples / "obsidian", tmp_path, "where does Wren live?")
    assert obsidian.link.startswith("obsidian://open?vault=obsidian&file=Wren"), obsidian.link
    assert obsidian.source == "Wren.md"
    gifts = _first_hit(examples / "obsidian", tmp_path, "gift ideas: fountain pen with green ink")
    assert gifts.link.endswith("file=Wren%23Gift%20ideas"), "a heading's block opens at the heading"
    roam_json = _first_hit(examples / "roam-json", tmp_path, "where does Wren live?")
    assert roam_json.uid and roam_json.link == "", "no graph name: no link"
    params = tmp_path / "repo"
    params.mkdir()
    (params / "params.yaml").write_text('notes:\n  roam_graph: "my notes"\n')
    monkeypatch.setenv("BYTECHAT_ROOT", str(params))
    roam_json = _first_hit(examples / "roam-json", tmp_path, "where does Wren live?")
    assert roam_json.link == f"https://roamresearch.com/#/app/my%20notes/page/{roam_json.uid}"
    assert sources_payload([roam_json])[0]["link"] == roam_json.link
    markdown_export = _first_hit(REPO / "examples" / "roam", tmp_path, "hives")
    assert markdown_export.uid == "" and markdown_export.link == "", "a Roam markdown export has no uids"

"""The notes readers (bytechat/notes/readers/): each format's shipped example gives the
same facts, blocks carry their uid / file / line, and hostile input is the right blocks
or one line naming the file (oversized, non-UTF-8, broken JSON and symlinked files of
each format: tests/test_data_sources.py)."""

from __future__ import annotations

import hashlib
import json
import typing
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytechat.core import paths
from bytechat.core.config import NotesFormat
from bytechat.notes import readers, roam
from bytechat.notes.blocks import page_blocks, plain
from bytechat.notes.index import FORMAT, VERSION, index_folder, notes_fingerprint
from bytechat.notes.readers import Block, NotesError, Page, logseq, markdown, roam_json
from bytechat.notes.readers.model import outline_lines, render
from tests.helpers import REPO, write_tree

EXAMPLES = REPO / "examples"
FORMATS = {"roam-json": EXAMPLES / "roam-json", "logseq": EXAMPLES / "logseq", "obsidian": EXAMPLES / "obsidian"}

# The example graph's blocks (page, text, position of all 936): no reader may change one
# byte of what the index and training see. (763 before blocks.GROUP_BYTES cut a block's
# children into blocks of 100 bytes, not 150; that change is the only one these pin.)
ROAM_EXAMPLE_BLOCKS = 936
ROAM_EXAMPLE_SHA256 = "8d940ca973f8a9f60bec48680f76d0de8b4718573dad675cffc80a8079e23bda"

# The same three pages, as Roam's markdown export writes them.
ROAM_MARKDOWN = {
    "Wren.md": (
        "- type:: #person\n- birthday:: 14 March\n- Lives in Ghent with her cat Pilot.\n"
        "- Gift ideas\n    - a fountain pen with green ink\n    - tickets for the lighthouse tour\n"
    ),
    "Recipes/Lentil Soup.md": (
        "- type:: #recipe\n- serves:: 4\n- Ingredients\n    - 250 g red lentils\n    - 1 onion and 2 carrots\n"
        "    - 1.2 litres vegetable stock\n- Method\n    - Soften the onion and carrots for 10 minutes.\n"
        "    - Simmer everything for 25 minutes, then blend half of it.\n"
    ),
    "December 2nd, 2026.md": (
        "- {{[[TODO]]}} buy red lentils for [[Recipes/Lentil Soup]]\n"
        "- Called [[Wren]]: the lighthouse tour runs until the end of March.\n- Soup tip: ((Lq7vT2mXa))\n"
    ),
}

FACTS = [
    ("Wren", "birthday: 14 March"),
    ("Wren", "Lives in Ghent with her cat Pilot."),
    ("Wren", "Gift ideas\n  a fountain pen with green ink\n  tickets for the lighthouse tour"),
    ("Recipes/Lentil Soup", "serves: 4"),
    ("Recipes/Lentil Soup", "Ingredients\n  250 g red lentils\n  1 onion and 2 carrots\n  1.2 litres vegetable stock"),
    # 107 bytes with both steps: past blocks.GROUP_BYTES, so each step is its own block
    ("Recipes/Lentil Soup", "Method\n  Soften the onion and carrots for 10 minutes."),
    ("Recipes/Lentil Soup", "Method\n  Simmer everything for 25 minutes, then blend half of it."),
    ("December 2nd, 2026", "TODO buy red lentils for Recipes/Lentil Soup"),
    ("December 2nd, 2026", "Called Wren: the lighthouse tour runs until the end of March."),
]
SOUP_TIP = ("December 2nd, 2026", "Soup tip: Soften the onion and carrots for 10 minutes.")


def blocks_of(root: Path, fmt: str | None = None) -> list:
    return [block for page in readers.iter_pages(root, fmt) for block in page_blocks(page)]


def pairs(root: Path, fmt: str | None = None) -> set[tuple[str, str]]:
    return {(b.page, b.text) for b in blocks_of(root, fmt)}


# ---------------------------------------------------------------- the example graph, unchanged


def test_example_graph_blocks_are_byte_identical_to_before_the_readers():
    pages = roam.load_pages(paths.example_roam_dir())
    assert {p.format for p in pages} == {"roam-markdown"}
    rows = [[b.page, b.text, b.position] for p in pages for b in page_blocks(p)]
    assert len(rows) == ROAM_EXAMPLE_BLOCKS
    assert hashlib.sha256(json.dumps(rows, ensure_ascii=False).encode()).hexdigest() == ROAM_EXAMPLE_SHA256


@pytest.mark.parametrize("folder", ["examples/roam", "data/unseen-notes", "data/new-user-notes"])
def test_roam_markdown_text_is_the_file_as_it_was(folder):
    root = REPO / folder
    pages = roam.load_pages(root)
    assert readers.detect(root) == "roam-markdown" and pages
    for page in pages:
        assert page.text == (root / page.source).read_text(encoding="utf-8").replace("\r\n", "\n")
        assert page.document() == f"{page.name}\n{page.text.rstrip()}"
        # every block knows its file and the line its top-level block starts on
        lines = page.text.split("\n")
        for block in page_blocks(page):
            assert block.source == page.source and not lines[block.line - 1].startswith((" ", "\t"))
        assert [b.line for b in page.tree()] == sorted(
            {b.line for b in page_blocks(page)} | {b.line for b in page.tree()}
        )


# ---------------------------------------------------------------- the same facts in each format


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_example_is_detected_and_gives_the_same_facts(fmt):
    root = FORMATS[fmt]
    assert readers.detect(root) == fmt
    found = pairs(root)
    for fact in FACTS:
        assert fact in found, (fmt, fact)
    assert SOUP_TIP in found  # the block reference (embed) resolved to the block's text
    assert not any("((" in text or "[[" in text or "::" in text for _, text in found)


def test_roam_markdown_json_and_logseq_give_identical_blocks(tmp_path):
    md = pairs(write_tree(tmp_path, ROAM_MARKDOWN))
    as_json, as_logseq = pairs(FORMATS["roam-json"]), pairs(FORMATS["logseq"])
    assert as_json == as_logseq
    # the markdown export cannot resolve the block reference; all else is the same
    assert md - {("December 2nd, 2026", "Soup tip:")} == as_json - {SOUP_TIP}
    assert set(FACTS) <= md


def test_roam_json_keeps_uids_times_and_headings():
    pages = {p.name: p for p in readers.iter_pages(FORMATS["roam-json"])}
    soup = pages["Recipes/Lentil Soup"]
    assert soup.uid == "gL3qXr8Pd" and soup.source == "notes.json" and soup.created == 1795100000000
    method = soup.blocks[3]
    assert (method.string, method.uid, method.heading, method.edited) == ("Method", "oT9jQd5Km", 2, 1795100600000)
    assert method.children[0].uid == "Lq7vT2mXa"
    blocks = {b.text.split("\n")[0]: b for b in page_blocks(soup)}
    assert blocks["Method"].uid == "oT9jQd5Km" and blocks["Method"].heading == "Method"
    assert blocks["serves: 4"].uid == "iN7cYw2Rf" and blocks["serves: 4"].source == "notes.json"
    day = pages["December 2nd, 2026"]
    assert day.blocks[2].refs == ("Lq7vT2mXa",)  # the reference is kept, though its text is put in
    assert set(day.links) == {"Recipes/Lentil Soup", "Wren"}


def test_logseq_titles_uids_and_properties():
    pages = {p.name: p for p in readers.iter_pages(FORMATS["logseq"])}
    assert set(pages) == {"Wren", "Recipes/Lentil Soup", "December 2nd, 2026"}
    soup = pages["Recipes/Lentil Soup"]
    assert soup.source == "pages/Recipes___Lentil Soup.md"
    assert dict(soup.attributes) == {"type": "#recipe", "serves": "4"}
    soften = soup.blocks[3].children[0]
    assert soften.uid == "6571c3a2-8f4e-4b1a-9c2d-3e5f7a9b1c0d" and soften.line == 9
    assert "id::" not in soup.text  # Logseq's bookkeeping is not note text
    tip = page_blocks(pages["December 2nd, 2026"])[2]
    assert (tip.source, tip.line) == ("journals/2026_12_02.md", 3)


def test_obsidian_blocks_carry_file_line_heading_and_block_id():
    pages = {p.name: p for p in readers.iter_pages(FORMATS["obsidian"])}
    soup = pages["Recipes/Lentil Soup"]
    assert dict(soup.attributes) == {"type": "recipe", "serves": "4"}
    method = next(b for b in page_blocks(soup) if b.text.startswith("Method"))
    assert (method.source, method.line, method.heading) == ("Recipes/Lentil Soup.md", 12, "Method")
    assert soup.blocks[3].children[0].uid == "soften"
    assert "^soften" not in soup.text


# ---------------------------------------------------------------- detection and notes.format


def test_detection(tmp_path):
    assert readers.detect(tmp_path / "missing") is None
    assert readers.detect(write_tree(tmp_path / "empty", {})) is None
    assert readers.find_files(tmp_path / "empty") == []
    plain_md = write_tree(tmp_path / "plain", {"a.md": "# Title\n\nSome text.\n", "b.md": "---\nx: 1\n---\nHi\n"})
    assert readers.detect(plain_md) == "markdown"
    bullets = write_tree(tmp_path / "bullets", {"a.md": "- one\n", "b.md": "- two\n    - three\n", "c.md": "Text\n"})
    assert readers.detect(bullets) == "roam-markdown"
    journals = write_tree(tmp_path / "ls", {"journals/2026_01_05.md": "- hi\n", "pages/A.md": "- a\n"})
    assert readers.detect(journals) == "logseq"
    not_roam = write_tree(tmp_path / "js", {"package.json": '{"name": "x"}', "a.md": "- a\n"})
    assert readers.detect(not_roam) == "roam-markdown"  # a .json that is not an export is not notes


def test_edn_only_folder_says_why_it_is_not_read(tmp_path, capsys):
    edn = write_tree(tmp_path / "notes", {"graph.edn": "#datascript/DB {:schema {} :datoms []}"})
    assert roam.find_pages(edn) == []
    chosen, is_example = roam.resolve_roam_dir(edn, paths.example_roam_dir())
    assert is_example
    err = capsys.readouterr().err
    assert "EDN export is not read" in err and "export JSON instead" in err


def test_notes_format_from_params(tmp_path, monkeypatch):
    params = tmp_path / "params.yaml"
    assert readers.configured_format(params) == "auto"  # no file
    params.write_text("seed: 1\n", encoding="utf-8")
    assert readers.configured_format(params) == "auto"  # no key
    params.write_text("seed: 1\nnotes:\n  format: logseq\n  roam_graph: my-graph\n", encoding="utf-8")
    assert readers.configured_format(params) == "logseq"
    params.write_text("seed: 1\nnotes:\n  format: evernote\n", encoding="utf-8")
    with pytest.raises(NotesError) as err:
        readers.configured_format(params)
    assert str(err.value).count("\n") == 0 and "notes.format: expected 'auto', 'roam-markdown', " in str(err.value)
    assert typing.get_args(NotesFormat) == readers.FORMATS  # one list of formats, in the schema and the readers
    params.write_text("seed: 1\nnotes:\n  fromat: logseq\n", encoding="utf-8")
    with pytest.raises(NotesError, match=r"notes\.fromat: unknown key"):
        readers.configured_format(params)

    # notes.format applies to the user's notes folder (.roam-data/), not to others
    monkeypatch.setenv("BYTECHAT_ROOT", str(tmp_path))
    params.write_text("seed: 1\nnotes:\n  format: obsidian\n", encoding="utf-8")
    user = write_tree(tmp_path / ".roam-data", {"a.md": "- a bullet\n"})
    assert readers.resolve_format(user) == "obsidian"
    assert readers.resolve_format(write_tree(tmp_path / "other", {"a.md": "- a\n"})) == "roam-markdown"
    assert readers.resolve_format(user, "auto") == "roam-markdown"


def test_fingerprint_keeps_roam_markdown_and_names_other_formats(tmp_path):
    root = write_tree(tmp_path / "n", {"a.md": "- one\n", "b/c.md": "- two\n"})
    digest = hashlib.sha256(f"{FORMAT}/{VERSION}\n".encode())
    for rel in ("a.md", "b/c.md"):
        data = (root / rel).read_bytes()
        digest.update(f"{rel}\0{len(data)}\0".encode() + data)
    assert notes_fingerprint(root) == digest.hexdigest()  # indexes built before the readers stay current
    assert notes_fingerprint(root, "markdown") != notes_fingerprint(root)


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_each_example_indexes_and_is_current(fmt):
    index = index_folder(FORMATS[fmt], progress=False)
    with index:
        assert index.pages == 3 and len(index) >= 10
        assert index.stale_reason() is None
        assert index.search("when is Wren's birthday?", k=1)[0].text == "birthday: 14 March"


# ---------------------------------------------------------------- hostile input


def test_empty_files_are_empty_pages(tmp_path):
    assert [(p.name, p.blocks) for p in readers.iter_pages(write_tree(tmp_path / "r", {"a.md": ""}))] == [("a", ())]
    ls = write_tree(tmp_path / "l", {"logseq/config.edn": "{}", "pages/Empty.md": "", "journals/2026_01_01.md": ""})
    assert [b for p in readers.iter_pages(ls) for b in page_blocks(p)] == []
    ob = write_tree(tmp_path / "o", {".obsidian/app.json": "{}", "Empty.md": "", "Front only.md": "---\nx: 1\n---\n"})
    assert pairs(ob) == {("Front only", "x: 1")}


def test_empty_json_export_is_one_line(tmp_path):
    write_tree(tmp_path, {"graph.json": ""})
    assert readers.detect(tmp_path) is None  # not taken for an export...
    with pytest.raises(NotesError) as err:  # ...and named when asked for one
        readers.load_pages(tmp_path, "roam-json")
    assert "graph.json: not a Roam JSON export (empty" in str(err.value) and "\n" not in str(err.value)
    assert readers.load_pages(write_tree(tmp_path / "e", {"g.json": "[]"})) == []


def test_json_missing_children_and_missing_uid(tmp_path):
    export = [
        {"title": "No children"},
        {"title": "Refs", "children": [{"string": "see ((Zz9NoSuch)) and ((Aa1Found))", "uid": "Bb2Refs00"}]},
        {"title": "Target", "children": [{"string": "the found text", "uid": "Aa1Found"}, {"uid": "Cc3NoStr0"}]},
    ]
    root = write_tree(tmp_path, {"g.json": json.dumps(export)})
    pages = {p.name: p for p in readers.iter_pages(root)}
    assert pages["No children"].blocks == () and page_blocks(pages["No children"]) == []
    refs = page_blocks(pages["Refs"])
    assert [b.text for b in refs] == ["see and the found text"]  # a missing uid drops out, as in markdown
    assert "((Zz9NoSuch))" in pages["Refs"].text and pages["Refs"].blocks[0].refs == ("Zz9NoSuch", "Aa1Found")
    assert [b.text for b in page_blocks(pages["Target"])] == ["the found text"]


def test_json_streams_one_page_at_a_time(tmp_path, monkeypatch):
    monkeypatch.setattr(roam_json, "CHUNK", 64)  # many reads per page
    export = [
        {"title": f"Page {i}", "children": [{"string": f"block {i} é ü 日本", "uid": f"u{i:08d}"}]} for i in range(50)
    ]
    text = json.dumps(export, ensure_ascii=False, indent=1)
    root = write_tree(tmp_path, {"g.json": text})
    assert [p.name for p in readers.iter_pages(root)] == [f"Page {i}" for i in range(50)]
    # the list is decoded one page at a time: a file broken near its end gives its first
    # pages before the error...
    write_tree(tmp_path, {"g.json": text[:-40]})
    items = roam_json.iter_array(root / "g.json", readers.MAX_PAGE_BYTES)
    assert next(items)["title"] == "Page 0"
    with pytest.raises(NotesError, match="not valid JSON in page 50"):
        list(items)
    # ...while the reader's first pass (the block references) finds the error before
    # any page is yielded, so nothing is half-indexed
    pages = readers.iter_pages(root)
    with pytest.raises(NotesError, match="not valid JSON in page 50"):
        next(pages)


def test_front_matter_that_is_not_yaml_is_one_warning_and_read_as_text(tmp_path, capsys):
    root = write_tree(
        tmp_path,
        {
            ".obsidian/app.json": "{}",
            "Bad.md": "---\ntitle: [unclosed\nmood: fine\n---\n\nThe body stays.\n",
            "List.md": "---\n- a\n- b\n---\nBody\n",
        },
    )
    found = pairs(root)
    assert ("Bad", "The body stays.") in found and ("Bad", "mood: fine") in found
    assert ("List", "Body") in found
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("warning: ") for line in err)
    assert "Bad.md: front matter is not YAML" in err[0] and "List.md: front matter is a YAML list" in err[1]


# ---------------------------------------------------------------- format details


def test_logseq_details(tmp_path):
    root = write_tree(
        tmp_path,
        {
            "logseq/config.edn": "{}",
            "logseq/bak/pages/Old.md": "- a backup, never read\n",
            "pages/Books%2FDune.md": "- legacy namespace file name\n",
            "pages/Renamed.md": "title:: The Real Title\ntags:: reading\n\n- body\n",
            "pages/Tasks.md": (
                "- DONE water the plants\n- TODO repot the fern\n  collapsed:: true\n\t- a child\n"
                "- a block\n  with a second line\n  rating:: 5\n"
            ),
            "journals/2026_02_31.md": "- not a date: the name stays\n",
            "journals/2026_11_23.md": "- a Monday\n",
            "pages/Notes.org": "* org is not read\n",
        },
    )
    pages = {p.name: p for p in readers.iter_pages(root)}
    assert set(pages) == {"Books/Dune", "The Real Title", "Tasks", "2026_02_31", "November 23rd, 2026"}
    assert pairs(root) >= {
        ("The Real Title", "tags: reading"),
        ("Tasks", "DONE water the plants"),
        ("Tasks", "TODO repot the fern\n  a child"),
        ("Tasks", "a block\n  with a second line\n  rating: 5"),
    }
    assert "collapsed" not in pages["Tasks"].text
    assert [logseq.day_title(2026, 12, d) for d in (1, 2, 3, 11, 12, 13, 21, 22, 31)] == [
        f"December {d}, 2026" for d in ("1st", "2nd", "3rd", "11th", "12th", "13th", "21st", "22nd", "31st")
    ]


def test_obsidian_details(tmp_path):
    note = (
        "Intro with ==a highlight== and %%a hidden comment%% [[Other Note|an alias]].\n\n"
        "# Trip\n\n"
        "Paragraph under the heading\nwith a soft break.\n\n"
        "- [ ] pack the tent\n- [x] book the ferry\n    - nested detail\n\n"
        "| day | place |\n|---|---|\n| 1 | Oban |\n\n"
        "```\nferry 09:15\n```\n\n"
        "See [[Other Note#Packing]] and ![[map.png]]. ^trip-id\n"
        "## Later\n\n%%\na comment\nover lines\n%%\nLast words.\n"
    )
    root = write_tree(
        tmp_path,
        {".obsidian/app.json": "{}", ".trash/Old.md": "gone\n", "Trip.md": note, "attachments/map.png": b"\x89PNG"},
    )
    assert [p.name for p in readers.find_files(root)] == ["Trip.md"]
    page = readers.load_pages(root)[0]
    blocks = page_blocks(page)
    texts = [b.text for b in blocks]
    assert texts[0] == "Intro with a highlight and an alias."
    trip = "\n".join(b.text for b in blocks if b.heading == "Trip")
    for part in (
        "Paragraph under the heading\n    with a soft break.",
        "TODO pack the tent",
        "DONE book the ferry\n    nested detail",
        "day | place",
        "1 | Oban",
        "ferry 09:15",
        "See Other Note and map.png.",
    ):
        assert part in trip, part
    assert blocks[-1].heading == "Later" and blocks[-1].text == "Later\n  Last words."
    assert "comment" not in page.text
    assert any(b.uid == "trip-id" for b in page.blocks[1].children)
    assert blocks[-1].line == note.split("\n").index("## Later") + 1
    assert set(page.links) >= {"Other Note", "map.png"}


def test_page_blocks_without_a_tree_still_work():
    page = roam.RoamPage("Plain", "- one\n    - two\n- three\n")
    blocks = page_blocks(page)
    assert [(b.text, b.uid, b.source, b.line) for b in blocks] == [("one\n  two", "", "", 0), ("three", "", "", 0)]
    assert roam.RoamPage("A", "- x\n") == roam.RoamPage("A", "- x\n", source="A.md")  # equal by name and text


def test_obsidian_inline_rules():
    assert markdown.inline("[[A|b]] [[C#D]] ![[E]] [[#Local]] ==h== x ^id-1") == ("b [[C]] [[E]] Local ^^h^^ x", "id-1")


_strings = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30) | st.sampled_from(
    ["", "- ", "\n", "  x\n- y", "\t- z", "a\n\n    b", "1. n", "---", "# h"]
)
_trees = st.recursive(
    st.builds(Block, _strings),
    lambda children: st.builds(Block, _strings, st.lists(children, max_size=3).map(tuple)),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(st.lists(_trees, max_size=5))
def test_each_top_level_block_is_one_top_level_block_of_the_text(blocks):
    """What lets page_blocks give each NoteBlock its block's uid: rendering never starts
    a top-level block inside another, whatever the strings hold."""
    blocks = [replace(b, uid=f"u{i}") for i, b in enumerate(blocks)]
    page = Page.from_blocks("P", blocks, source="p.json")
    notes = page_blocks(page)
    assert all(note.source == "p.json" for note in notes)
    uids = [int(note.uid[1:]) for note in notes]
    assert uids == sorted(uids)  # in page order, each block's pieces together
    with_text = {i for i, b in enumerate(blocks) if any(plain(body) for _, _, body in outline_lines(render([b])))}
    assert set(uids) == with_text

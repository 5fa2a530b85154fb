"""Notes (every format), primer and WikiText loading; bad input is one clear error."""

import json
import random

import pytest

from tests.helpers import write_tree

from bytechat.text.chat_format import parse_chat, render_transcript
from bytechat.data import primer
from bytechat.notes import readers, roam
from bytechat.notes.readers import NotesError
from bytechat.data.wikitext import WikiTextError, load_wikitext

PAGES = {
    "Books/Dune.md": "- author:: [[Frank Herbert]]\n    - spice ((abc123def))\n",
    "Crème brûlée.md": "- #dessert sugar on top\n",
    "日本語 study.md": "- ひらがな first\n",
    "November 25th, 2026.md": "- {{[[TODO]]}} call [[Mum]]\n",
    "Projects/Deep/Log.md": "- status:: ok\n",
    "Recipes.md": "- bread\n",
}


def write_graph(root, pages=PAGES, order=None):
    for name in order or pages:
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pages[name], encoding="utf-8")
    return root


def test_roam_loads_nested_and_non_ascii(tmp_path):
    pages = roam.load_pages(write_graph(tmp_path))
    names = [p.name for p in pages]
    assert names == sorted(names)
    assert {"Books/Dune", "Crème brûlée", "日本語 study", "Projects/Deep/Log"} <= set(names)
    dune = next(p for p in pages if p.name == "Books/Dune")
    assert dune.document().startswith("Books/Dune\n- author:: [[Frank Herbert]]")


def test_roam_split_deterministic_and_independent_of_listing_order(tmp_path):
    order = list(PAGES)
    random.Random(3).shuffle(order)
    a = roam.split_pages(roam.load_pages(write_graph(tmp_path / "a")), seed=5, val_fraction=0.34)
    b = roam.split_pages(roam.load_pages(write_graph(tmp_path / "b", order=order)), seed=5, val_fraction=0.34)
    c = roam.split_pages(list(reversed(roam.load_pages(tmp_path / "a"))), seed=5, val_fraction=0.34)
    assert a == b == c
    train, val = a
    assert len(val) == 2 and len(train) == 4
    assert not {p.name for p in train} & {p.name for p in val}
    seeds = {tuple(p.name for p in roam.split_pages(train + val, seed=s, val_fraction=0.34)[1]) for s in range(20)}
    assert len(seeds) > 1  # the seed matters


def test_roam_not_utf8_names_the_file(tmp_path):
    write_graph(tmp_path)
    (tmp_path / "bad.md").write_bytes(b"- caf\xe9\n")
    with pytest.raises(roam.RoamError, match=r"bad\.md: not UTF-8"):
        roam.load_pages(tmp_path)


def test_roam_symlinks_outside_the_notes_are_skipped_with_a_warning(tmp_path, capsys):
    notes = write_graph(tmp_path / "notes")
    secret = tmp_path / "elsewhere"
    (secret / "deep").mkdir(parents=True)
    (secret / "id_rsa.md").write_text("PRIVATE KEY", encoding="utf-8")
    (secret / "deep" / "diary.md").write_text("private diary", encoding="utf-8")
    (notes / "leak.md").symlink_to(secret / "id_rsa.md")
    (notes / "Books" / "outside").symlink_to(secret, target_is_directory=True)
    (notes / "alias.md").symlink_to(notes / "Recipes.md")  # inside the notes: fine
    pages = roam.load_pages(notes)
    texts = "".join(p.text for p in pages)
    assert "PRIVATE" not in texts and "diary" not in texts
    assert {p.name for p in pages} == {n[:-3] for n in PAGES} | {"alias"}
    err = capsys.readouterr().err
    assert "leak.md: symlink to" in err and "outside: symlink to" in err and "skipped" in err
    assert all(line.startswith("warning: ") for line in err.splitlines())
    assert "leak.md" not in {p.name for p in roam.find_pages(notes)}


def test_roam_page_over_the_size_cap_is_one_line_naming_the_file(tmp_path):
    notes = write_graph(tmp_path)
    (notes / "huge dump.md").write_bytes(b"- x\n" * 5000)
    with pytest.raises(roam.RoamError) as err:
        roam.load_pages(notes, max_page_bytes=10_000)
    message = str(err.value)
    assert "\n" not in message and "huge dump.md" in message and "20,000 bytes" in message and "10,000" in message
    assert len(roam.load_pages(notes, max_page_bytes=20_000)) == len(PAGES) + 1
    assert roam.MAX_PAGE_BYTES >= 1024 * 1024  # the default leaves room for real pages


def test_empty_roam_dir_falls_back_to_example_loudly(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    example = write_graph(tmp_path / "example")
    chosen, is_example = roam.resolve_roam_dir(tmp_path / "empty", example)
    assert (chosen, is_example) == (example, True)
    assert "EXAMPLE Roam graph" in capsys.readouterr().err
    chosen, is_example = roam.resolve_roam_dir(tmp_path / "missing", example)
    assert is_example and "is missing" in capsys.readouterr().err
    assert roam.resolve_roam_dir(example, tmp_path / "empty") == (example, False)


# ---------------------------------------------------------------- the other notes formats (bytechat/notes/readers)


@pytest.mark.parametrize(
    "content, message",
    [
        ('{"title": "x"}', "not a Roam JSON export (starts with '{'"),
        ('[{"title": "A"}, 3]', "page 2 is a int, not a page object"),
        ('[{"children": []}]', "page 1 has no title"),
        ('[{"title": "A", "children": {"string": "x"}}]', "children is a dict, not a list"),
        ('[{"title": "A"} {"title": "B"}]', "expected , or ]"),
        ('[{"title": "A", "children": [', "not valid JSON in page 1"),
    ],
)
def test_broken_json_export_is_one_line_naming_the_file(tmp_path, content, message):
    write_tree(tmp_path, {"graph.json": content})
    with pytest.raises(NotesError) as err:
        readers.load_pages(tmp_path, "roam-json")
    assert str(err.value).startswith(str(tmp_path / "graph.json")) and message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    "fmt, name",
    [("roam-markdown", "Huge.md"), ("logseq", "pages/Huge.md"), ("obsidian", "Huge.md"), ("roam-json", "g.json")],
)
def test_a_5_mb_page_is_one_line_naming_the_file(tmp_path, fmt, name):
    big = "- " + "lorem ipsum dolor " * (5 * 1024 * 1024 // 18) + "\n"
    content = (
        json.dumps([{"title": "Small"}, {"title": "Huge", "children": [{"string": big}]}])
        if fmt == "roam-json"
        else big
    )
    write_tree(tmp_path, {name: content, **({"logseq/config.edn": "{}"} if fmt == "logseq" else {})})
    with pytest.raises(NotesError) as err:
        readers.load_pages(tmp_path, fmt)
    message = str(err.value)
    assert "\n" not in message and name.split("/")[-1] in message and "4,194,304-byte page cap" in message
    if fmt == "roam-json":
        assert "page 2 ('Huge')" in message


@pytest.mark.parametrize("fmt, name", [("logseq", "pages/Bad.md"), ("obsidian", "Bad.md"), ("roam-json", "g.json")])
def test_not_utf8_is_one_line_naming_the_file(tmp_path, fmt, name):
    content = b'[{"title": "caf\xe9"}]' if fmt == "roam-json" else b"- caf\xe9\n"
    write_tree(tmp_path, {name: content})
    with pytest.raises(NotesError) as err:
        readers.load_pages(tmp_path, fmt)
    assert name.split("/")[-1] in str(err.value) and "not UTF-8" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("fmt", ["logseq", "obsidian", "roam-json"])
def test_symlinks_outside_the_notes_are_never_followed(tmp_path, fmt, capsys):
    secret = write_tree(tmp_path / "elsewhere", {"diary.md": "- PRIVATE diary\n", "x.json": '[{"title": "PRIVATE"}]'})
    notes = tmp_path / "notes"
    if fmt == "logseq":
        write_tree(notes, {"logseq/config.edn": "{}", "pages/A.md": "- a\n"})
        (notes / "pages" / "leak.md").symlink_to(secret / "diary.md")
        (notes / "journals").symlink_to(secret, target_is_directory=True)
    elif fmt == "obsidian":
        write_tree(notes, {".obsidian/app.json": "{}", "A.md": "a\n"})
        (notes / "leak.md").symlink_to(secret / "diary.md")
        (notes / "sub").symlink_to(secret, target_is_directory=True)
    else:
        write_tree(notes, {"g.json": '[{"title": "A", "children": [{"string": "a"}]}]'})
        (notes / "leak.json").symlink_to(secret / "x.json")
    pages = readers.load_pages(notes, fmt)
    assert [p.name for p in pages] == ["A"]
    assert "PRIVATE" not in "".join(p.text for p in pages)
    assert "symlink to" in capsys.readouterr().err
    assert all("elsewhere" not in str(path) for path in readers.find_files(notes, fmt))


PRIMER = """<dialogue>
system: Be brief.
user: hi
assistant: Hello!
</dialogue>

<dialogue>
user: list two fruits
assistant: - apple
- pear
user: and a third?
assistant: Plum.
</dialogue>

<dialogue>
user: say "\\\\user: " please
assistant: ok
</dialogue>
"""


def test_primer_blocks_parse_and_never_mix():
    blocks = primer.parse_primer(PRIMER)
    assert len(blocks) == 3
    assert blocks[1][0] == {"role": "user", "content": "list two fruits"}
    assert blocks[1][1]["content"] == "- apple\n- pear"
    for seed in range(10):
        train, val = primer.split_blocks(blocks, seed, 0.34)
        assert len(train) + len(val) == 3 and len(val) == 1
        assert sorted(map(str, train + val)) == sorted(map(str, blocks))  # whole blocks only
    docs = primer.documents(blocks)
    assert docs[0] == "system: Be brief.\nuser: hi\nassistant: Hello!"
    assert all(parse_chat(d) == b for d, b in zip(docs, blocks))


def test_primer_split_deterministic():
    blocks = primer.parse_primer(PRIMER * 3)
    assert primer.split_blocks(blocks, 1, 0.3) == primer.split_blocks(blocks, 1, 0.3)


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "no <dialogue> blocks"),
        ("\n\n", "no <dialogue> blocks"),
        ("<dialogue>\nuser: hi\n", ":1: <dialogue> never closed"),
        ("user: hi\n</dialogue>\n", ":1: text outside"),
        ("</dialogue>\n", ":1: </dialogue> without"),
        ("<dialogue>\nuser: a\n<dialogue>\n", ":3: <dialogue> inside the block opened at line 1"),
        ("<dialogue>\nhello\n</dialogue>\n", ":2: transcript must start with"),
    ],
)
def test_bad_primer_names_file_and_line(tmp_path, text, message):
    path = tmp_path / "primer.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(primer.PrimerError) as err:
        primer.load_primer(path)
    assert str(err.value).startswith(str(path)) and message in str(err.value)


def test_missing_primer(tmp_path):
    with pytest.raises(primer.PrimerError, match="file not found"):
        primer.load_primer(tmp_path / "nope.txt")


def test_wikitext_offline_corpus_three_lists():
    splits = load_wikitext("offline")
    assert set(splits) == {"train", "validation", "test"}
    for rows in splits.values():
        assert rows and all(isinstance(r, str) for r in rows)
    assert splits.source["kind"] == "offline"
    assert sum(map(len, splits["train"])) > 200_000


def test_wikitext_auto_falls_back_offline_without_hub(capsys):
    splits = load_wikitext("auto", hub_timeout_s=1)  # HF_*_OFFLINE=1 in tests
    assert splits.source["kind"] == "offline"
    assert "OFFLINE corpus" in capsys.readouterr().err


def test_wikitext_raw_files(tmp_path):
    for name, text in (("train", " = A = \n\n a b c\n"), ("valid", " = B = \n x\n"), ("test", " = C = \n y\n")):
        (tmp_path / f"wiki.{name}.raw").write_text(text, encoding="utf-8")
    splits = load_wikitext(str(tmp_path))
    assert "".join(splits["train"]) == " = A = \n\n a b c\n"
    assert splits.source["kind"] == "local-text"


def test_wikitext_missing_split_is_named(tmp_path):
    (tmp_path / "wiki.train.raw").write_text("a\n")
    (tmp_path / "wiki.valid.raw").write_text("b\n")
    with pytest.raises(WikiTextError, match="split test missing"):
        load_wikitext(str(tmp_path))
    with pytest.raises(WikiTextError, match="not a folder"):
        load_wikitext(str(tmp_path / "nowhere"))


def test_wikitext_shared_parquet_copy(shared_wikitext):
    splits = load_wikitext(str(shared_wikitext))
    assert [len(splits[s]) for s in ("train", "validation", "test")] == [3163, 253, 344]
    assert splits.source["kind"] == "local-parquet"
    assert splits.source["sha256"]["validation"] == ["776166ec98faed82e0e7919b201b37d72b1571147aae7b7cb515981c5b806d91"]


def test_render_transcript_is_what_primer_trains_on():
    blocks = primer.parse_primer(PRIMER)
    assert primer.documents(blocks) == [render_transcript(b) for b in blocks]

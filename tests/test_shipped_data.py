"""The primer and example Roam graph that ship with the repo."""

import re

from bytechat import paths
from bytechat.chat_format import parse_chat, render_transcript
from bytechat.data import primer, roam


def test_every_primer_block_round_trips():
    blocks = primer.load_primer(paths.PRIMER)
    assert len(blocks) >= 120
    text = paths.PRIMER.read_text(encoding="utf-8")
    raw_blocks = re.findall(r"<dialogue>\n(.*?)\n</dialogue>", text, flags=re.S)
    assert len(raw_blocks) == len(blocks)
    for raw, messages in zip(raw_blocks, blocks):
        assert render_transcript(messages) == raw
        assert parse_chat(raw) == messages
        assert 2 <= len(messages) <= 10


def test_primer_shape():
    blocks = primer.load_primer(paths.PRIMER)
    ending_on_assistant = sum(b[-1]["role"] == "assistant" for b in blocks)
    assert ending_on_assistant / len(blocks) >= 0.85
    with_system = [b for b in blocks if b[0]["role"] == "system"]
    assert len(with_system) >= 5
    assert all(m["role"] != "system" for b in blocks for m in b[1:])
    non_ascii = [b for b in blocks if any(not m["content"].isascii() for m in b)]
    assert len(non_ascii) >= 5
    assert any(len(m["content"].splitlines()) > 1 for b in blocks for m in b)  # multi-line answers


def test_example_graph_loads_without_warning(capsys):
    chosen, is_example = roam.resolve_roam_dir(paths.EXAMPLE_ROAM_DIR, paths.EXAMPLE_ROAM_DIR)
    assert not is_example and capsys.readouterr().err == ""
    pages = roam.load_pages(chosen)
    assert len(pages) >= 30
    assert sum(len(p.text.encode()) for p in pages) >= 60_000
    names = {p.name for p in pages}
    assert any(re.fullmatch(r"[A-Z][a-z]+ \d{1,2}(st|nd|rd|th), \d{4}", n) for n in names)  # daily notes
    assert any("/" in n for n in names)  # namespaces
    assert any(not n.isascii() for n in names)
    text = "\n".join(p.text for p in pages)
    for marker in ("[[", "::", "{{[[TODO]]}}", "((", "#"):
        assert marker in text


def test_shipped_splits_are_deterministic():
    pages = roam.load_pages(paths.EXAMPLE_ROAM_DIR)
    blocks = primer.load_primer(paths.PRIMER)
    assert roam.split_pages(pages, 1337, 0.1) == roam.split_pages(list(reversed(pages)), 1337, 0.1)
    assert primer.split_blocks(blocks, 1337, 0.1) == primer.split_blocks(blocks, 1337, 0.1)
    train, val = roam.split_pages(pages, 1337, 0.1)
    assert len(val) >= 3 and len(train) + len(val) == len(pages)

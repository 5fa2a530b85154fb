"""The primer and example Roam graph that ship with the repo."""

import re

from bytechat.core import paths
from bytechat.text.chat_format import parse_chat, render_transcript
from bytechat.data import primer
from bytechat.notes import roam


def test_every_primer_block_round_trips():
    blocks = primer.load_primer(paths.primer_file())
    assert len(blocks) >= 280
    text = paths.primer_file().read_text(encoding="utf-8")
    raw_blocks = re.findall(r"<dialogue>\n(.*?)\n</dialogue>", text, flags=re.S)
    assert len(raw_blocks) == len(blocks)
    for raw, messages in zip(raw_blocks, blocks):
        assert render_transcript(messages) == raw
        assert parse_chat(raw) == messages
        assert 2 <= len(messages) <= 10


def test_primer_shape():
    blocks = primer.load_primer(paths.primer_file())
    ending_on_assistant = sum(b[-1]["role"] == "assistant" for b in blocks)
    assert ending_on_assistant / len(blocks) >= 0.85
    with_system = [b for b in blocks if b[0]["role"] == "system"]
    assert len(with_system) >= 5
    assert all(m["role"] != "system" for b in blocks for m in b[1:])
    non_ascii = [b for b in blocks if any(not m["content"].isascii() for m in b)]
    assert len(non_ascii) >= 5
    assert any(len(m["content"].splitlines()) > 1 for b in blocks for m in b)  # multi-line answers


def test_example_graph_loads_without_warning(capsys):
    chosen, is_example = roam.resolve_roam_dir(paths.example_roam_dir(), paths.example_roam_dir())
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
    pages = roam.load_pages(paths.example_roam_dir())
    blocks = primer.load_primer(paths.primer_file())
    assert roam.split_pages(pages, 1337, 0.1) == roam.split_pages(list(reversed(pages)), 1337, 0.1)
    assert primer.split_blocks(blocks, 1337, 0.1) == primer.split_blocks(blocks, 1337, 0.1)
    train, val = roam.split_pages(pages, 1337, 0.1)
    assert len(val) >= 3 and len(train) + len(val) == len(pages)


_NOTE_LINE = re.compile(r"\[([^\[\]\n]+)\] (\S.*)")


def _parse_notes(notes: str):
    """The blocks of a rendered notes section, best first (the reverse of the layout)."""
    from bytechat.notes.blocks import NoteBlock

    header, *lines = notes.split("\n")
    assert header == "Notes:", notes
    shown: list[list[str]] = []
    for line in lines:
        match = _NOTE_LINE.fullmatch(line)
        if match:
            shown.append([match.group(1), match.group(2)])
        else:
            assert shown and line.startswith("  ") and line.strip(), f"bad notes line {line!r}"
            shown[-1][1] += "\n" + line
    return [NoteBlock(page, text, i) for i, (page, text) in enumerate(reversed(shown))]


def test_primer_notes_follow_the_chat_layout():
    from bytechat.notes.blocks import MAX_BLOCK_BYTES, NO_NOTES, notes_system_content, render_notes

    blocks = primer.load_primer(paths.primer_file())
    with_blocks = with_none = 0
    for messages in blocks:
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        start = system.find("Notes:")
        has_blocks = False
        if start >= 0:
            assert start == 0 or system[start - 1] == "\n", system
            prompt, notes = system[: max(start - 1, 0)] or None, system[start:]
            if notes == NO_NOTES:
                with_none += 1
            else:
                parsed = _parse_notes(notes)
                assert parsed and render_notes(parsed) == notes
                assert all(len(b.text.encode()) <= MAX_BLOCK_BYTES for b in parsed)
                has_blocks = True
                with_blocks += 1
            assert notes_system_content(notes, prompt) == system
        assert all("Notes:" not in m["content"] for m in messages[1:])
        if not has_blocks:  # no invented note content without notes to take it from
            for m in messages:
                if m["role"] == "assistant":
                    assert not m["content"].startswith(("Your notes", "From ")), messages
    assert with_blocks >= 100 and with_none >= 10


def test_primer_short_talk_ends_short():
    blocks = primer.load_primer(paths.primer_file())
    short = [
        b for b in blocks if len(b) <= 3 and "Notes:" not in b[0]["content"] and len(b[-1]["content"].encode()) < 120
    ]
    assert len(short) >= 100
    assert any(b[0]["role"] == "system" for b in short)
    assert sum(not b[-2]["content"].isascii() for b in short) >= 10


def test_primer_answers_say_the_page_not_echo_it():
    """Issue 29: the primer's notes answers name their page in a sentence ("Your Bagels
    notes say: ...", "On your Bagels page: ..."), as the grounded dialogues do; none
    opens with the search box's `From [Page]`."""
    blocks = primer.load_primer(paths.primer_file())
    answers = [m["content"] for b in blocks for m in b if m["role"] == "assistant"]
    assert not [a for a in answers if a.startswith("From [")]
    assert sum(a.startswith(("Your ", "On your ")) for a in answers) >= 90

"""What a chat prompt shows: its messages, and the note entries of its system turn.

Faithful decoding (bytechat.serve.copying), the span answer (bytechat.serve.span_answer)
and the span frames read the prompt the model is given through these, so they agree on
which blocks were shown and in what order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bytechat.notes.blocks import NOTES_HEADER
from bytechat.text.chat_format import ChatFormatError, parse_chat


def shown_entries(messages: Sequence[Mapping[str, str]]) -> list[str]:
    """The note entries (`[Page] block text`, children's lines included) the prompt's
    system turn shows, in prompt order; [] when it shows none ("Notes: none found.", no
    notes, no system turn). The notes are the system turn's last part (notes_system_content),
    so a person's own system prompt that holds a "Notes:" line is not mistaken for them."""
    if not messages or messages[0].get("role") != "system":
        return []
    lines = messages[0]["content"].split("\n")
    starts = [i for i, line in enumerate(lines) if line == NOTES_HEADER]
    if not starts:
        return []
    entries: list[list[str]] = []
    for line in lines[starts[-1] + 1 :]:
        if line.startswith(" ") and entries:  # a child line ("  Ratio 1:1:1") of the entry above
            entries[-1].append(line)
        else:  # "[Page] text"; anything else (a layout this does not know) is no entry
            entries.append([line])
    # An entry without "] " is one crop_messages cut inside its page name: nothing to quote.
    return ["\n".join(entry) for entry in entries if entry[0].startswith("[") and "] " in entry[0]]


def prompt_messages(prompt: bytes) -> list[dict[str, str]]:
    """The messages of a chat prompt (format_chat's bytes); [] for anything else."""
    try:
        return parse_chat(prompt.decode("utf-8"))
    except (UnicodeDecodeError, ChatFormatError):
        return []

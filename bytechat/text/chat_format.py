"""The chat transcript format shared by the primer, training, the CLI and the server.

A transcript is one `role: content` turn per message, joined by "\\n":

    system: You are terse.
    user: hi
    assistant: Hello.

`format_chat(messages)` renders the prompt for the next reply: the transcript followed by
"\\nassistant: " (exactly one space, no newline), so the model continues with the reply.

A turn ends only where a new line starts with a role tag. Content may span several lines;
to stop content from forging a turn, a line inside content that starts with a role tag,
possibly preceded by backslashes, gets one more backslash in front ("byte stuffing"):

    "ok\\nuser: hi"     is written   "ok\\n\\\\user: hi"
    "ok\\n\\\\user: hi"   is written   "ok\\n\\\\\\\\user: hi"

Parsing removes exactly one backslash again, so format -> parse is the identity for any
content (proved by property tests in tests/test_chat_format.py).
"""

from __future__ import annotations

import re
from typing import Iterable, Mapping

ROLES = ("system", "user", "assistant")
STOP_TAGS = tuple(f"\n{role}: " for role in ROLES)  # generation stops on any of these
ASSISTANT_PROMPT = "assistant: "

_ROLE_ALT = "|".join(ROLES)
# A line (after "\n") that starts with optional backslashes and a role tag.
_NEEDS_ESCAPE = re.compile(rf"\n(\\*)(?=(?:{_ROLE_ALT}): )")
_ESCAPED = re.compile(rf"\n\\(\\*)(?=(?:{_ROLE_ALT}): )")
# A real turn boundary: a newline directly followed by a role tag.
_TURN = re.compile(rf"\n(?=(?:{_ROLE_ALT}): )")
_TURN_START = re.compile(rf"^({_ROLE_ALT}): ", re.S)
# Generated text that ends inside a turn tag ("...\nassist"): generation was cut by its
# length limit while the model was ending its reply.
_CUT_TAG = re.compile(
    r"\n+(?:" + "|".join(re.escape(tag[1:i]) for tag in STOP_TAGS for i in range(2, len(tag))) + r")?\Z"
)


def tag_continuations(tail: bytes) -> set[int]:
    """The bytes that go on writing a stop tag that tail ("\\n", "\\nus") has begun."""
    tags = (tag.encode("utf-8") for tag in STOP_TAGS)
    return {tag[len(tail)] for tag in tags if len(tag) > len(tail) and tag.startswith(tail)}


class ChatFormatError(ValueError):
    """A transcript or message list that does not follow the chat format."""


def escape_content(content: str) -> str:
    return _NEEDS_ESCAPE.sub(lambda m: "\n\\" + m.group(1), content)


def unescape_content(content: str) -> str:
    return _ESCAPED.sub(lambda m: "\n" + m.group(1), content)


def _check_message(i: int, message: Mapping[str, str]) -> tuple[str, str]:
    try:
        role, content = message["role"], message["content"]
    except (KeyError, TypeError):
        raise ChatFormatError(f"messages[{i}]: needs 'role' and 'content'") from None
    if role not in ROLES:
        raise ChatFormatError(f"messages[{i}].role: {role!r} is not one of {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise ChatFormatError(f"messages[{i}].content: must be a string")
    return role, content


def render_transcript(messages: Iterable[Mapping[str, str]]) -> str:
    """Messages as a transcript: `role: content` turns joined by "\\n", content escaped."""
    lines = []
    for i, message in enumerate(messages):
        role, content = _check_message(i, message)
        lines.append(f"{role}: {escape_content(content)}")
    return "\n".join(lines)


def format_chat(messages: Iterable[Mapping[str, str]]) -> str:
    """The prompt for the assistant's next reply; always ends with exactly "assistant: "."""
    transcript = render_transcript(messages)
    return f"{transcript}\n{ASSISTANT_PROMPT}" if transcript else ASSISTANT_PROMPT


def prompt_budget(block_size: int) -> int:
    """Bytes a chat prompt may take in a block_size-byte window: 3/4 of it, so a quarter
    is left for the reply before the KV cache has to re-prefill (the chat engines crop
    prompts to it; the notes are sized to fit it)."""
    return max(1, block_size * 3 // 4)


def parse_chat(transcript: str) -> list[dict[str, str]]:
    """Inverse of render_transcript: split on turn boundaries and unescape each content."""
    if not _TURN_START.match(transcript):
        raise ChatFormatError(
            f"transcript must start with one of {', '.join(r + ': ' for r in ROLES)} (starts with {transcript[:20]!r})"
        )
    messages = []
    for turn in _TURN.split(transcript):
        role, content = turn.split(": ", 1)
        messages.append({"role": role, "content": unescape_content(content)})
    return messages


def extract_assistant_reply(generated: str) -> str:
    """The reply in text generated after "assistant: ": everything up to the first
    "\\n(system|user|assistant): " tag (only those tags end it), unescaped. Newlines
    right before that tag are dropped (documents in the training streams are joined by
    a blank line, so a model often ends its reply with one). Text cut where it could be
    inside a tag (the length limit hit "...\\nassist") ends before it, newlines and all: a
    reply that was cut loses at most the first letters of its last line, not shows a tag."""
    match = _TURN.search(generated)
    reply = _CUT_TAG.sub("", generated) if match is None else generated[: match.start()].rstrip("\n")
    return unescape_content(reply)

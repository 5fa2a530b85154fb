"""The dialogue primer: `<dialogue>` ... `</dialogue>` blocks of chat transcripts.

Each block is parsed with the chat format and must render back to exactly its own text,
so the model trains on precisely what `format_chat` produces at inference time.
"""

from __future__ import annotations

import random
from pathlib import Path

from bytechat.text.chat_format import ChatFormatError, parse_chat, render_transcript

OPEN, CLOSE = "<dialogue>", "</dialogue>"


class PrimerError(ValueError):
    pass


def parse_primer(text: str, path: str | Path = "primer.txt") -> list[list[dict[str, str]]]:
    """Blocks as message lists. Errors name the file and line."""
    blocks: list[list[dict[str, str]]] = []
    inner: list[str] | None = None
    start = 0
    for lineno, line in enumerate(text.replace("\r\n", "\n").split("\n"), start=1):
        stripped = line.strip()
        if stripped == OPEN:
            if inner is not None:
                raise PrimerError(f"{path}:{lineno}: {OPEN} inside the block opened at line {start}")
            inner, start = [], lineno
        elif stripped == CLOSE:
            if inner is None:
                raise PrimerError(f"{path}:{lineno}: {CLOSE} without an opening {OPEN}")
            blocks.append(_parse_block(inner, path, start))
            inner = None
        elif inner is not None:
            inner.append(line)
        elif stripped:
            raise PrimerError(f"{path}:{lineno}: text outside a {OPEN} block")
    if inner is not None:
        raise PrimerError(f"{path}:{start}: {OPEN} never closed")
    if not blocks:
        raise PrimerError(f"{path}: no {OPEN} blocks found")
    return blocks


def _parse_block(lines: list[str], path, start: int) -> list[dict[str, str]]:
    transcript = "\n".join(lines)
    try:
        messages = parse_chat(transcript)
    except ChatFormatError as exc:
        raise PrimerError(f"{path}:{start + 1}: {exc}") from None
    if render_transcript(messages) != transcript:  # cannot happen for parseable text; guard anyway
        raise PrimerError(f"{path}:{start}: block does not round-trip through the chat format")
    return messages


def load_primer(path: str | Path) -> list[list[dict[str, str]]]:
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise PrimerError(f"{path}: file not found") from None
    except UnicodeDecodeError as exc:
        raise PrimerError(f"{path}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return parse_primer(text, path)


def split_blocks(blocks: list, seed: int, val_fraction: float) -> tuple[list, list]:
    """(train, val) of whole blocks, by a seeded shuffle of their positions in the file."""
    order = list(range(len(blocks)))
    random.Random(seed).shuffle(order)
    n_val = min(max(1, round(len(blocks) * val_fraction)), len(blocks) - 1) if len(blocks) > 1 else 0
    return [blocks[i] for i in sorted(order[n_val:])], [blocks[i] for i in sorted(order[:n_val])]


def documents(blocks: list[list[dict[str, str]]]) -> list[str]:
    return [render_transcript(messages) for messages in blocks]

"""Byte-level tokenizer: token ids are the 256 byte values of UTF-8."""

from __future__ import annotations

import codecs
from typing import Iterable

VOCAB_SIZE = 256


def encode(text: str) -> list[int]:
    return list(text.encode("utf-8"))


def decode(ids: Iterable[int]) -> str:
    """Bytes back to text; invalid UTF-8 becomes U+FFFD instead of raising."""
    return bytes(ids).decode("utf-8", errors="replace")


class StreamDecoder:
    """Incremental decoder for streaming generation.

    Holds back the bytes of an unfinished multi-byte character until it is complete, so
    a streamed reply never shows half a character (or a spurious U+FFFD) mid-stream.
    """

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, data: bytes | int) -> str:
        if isinstance(data, int):
            data = bytes((data,))
        return self._decoder.decode(data, final=False)

    def flush(self) -> str:
        """End of stream: whatever is left (an unfinished character becomes U+FFFD)."""
        return self._decoder.decode(b"", final=True)

"""The bot's own sentences: every reply training teaches that quotes no note, which
faithful decoding (bytechat/serve/copying.py, OWN_WORDS) keeps a reply that is not a quote
to, and the lookups over them (sorted byte strings: what may follow a prefix, whether a
reply is whole). Small talk of one act (bytechat.notes.intent) narrows them to that act's
replies."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Mapping, Sequence
from functools import lru_cache

from bytechat.core import paths
from bytechat.data.primer import load_primer
from bytechat.notes import intent
from bytechat.notes.blocks import NO_NOTES, NOTES_HEADER
from bytechat.notes.dialogues import everyday
from bytechat.notes.grounded import ABSTAIN
from bytechat.text.chat_format import escape_content


def small_talk_act(messages: Sequence[Mapping[str, str]]) -> str | None:
    """The act of the newest user message (intent.small_talk_act: None unless it reads
    as small talk) where the prompt has no notes section at all; None where notes were
    searched for it."""
    if any(m["role"] == "system" and NOTES_HEADER in m["content"] for m in messages):
        return None  # notes were searched for it, even if none were found: a question
    said = last_user(messages)
    return intent.small_talk_act(said) if said is not None else None


def found_none(messages: Sequence[Mapping[str, str]]) -> bool:
    """Whether the prompt's notes are "Notes: none found.": retrieval searched for the
    message and found nothing (not a prompt that sent no notes at all, as for small talk)."""
    system = messages[0]["content"] if messages and messages[0].get("role") == "system" else ""
    return system.split("\n")[-1] == NO_NOTES


@lru_cache(maxsize=1)
def none_found_sentences() -> tuple[bytes, ...]:
    """What training answers a question with where retrieval found nothing: the
    abstention, or a refusal that says the notes, not the world, are what it knows."""
    return encoded([ABSTAIN, *everyday.refusal_replies()])


def last_user(messages: Sequence[Mapping[str, str]]) -> str | None:
    users = [m["content"] for m in messages if m["role"] == "user"]
    return users[-1] if users else None


def own_sentences(act: str | None = None, said: str | None = None) -> tuple[bytes, ...]:
    """Every reply training teaches that quotes no note: the small talk of
    dialogues.everyday (every filler), the abstention, and the primer's replies in its
    dialogues without notes (data/primer.txt). With own_words, a reply that is not a
    quote is one of these, chosen by the model: small talk stays grammatical. act (a
    small-talk topic): only that topic's replies to said, the message ("morning!" gets a
    good morning, not a good evening: everyday.said_fillers)."""
    if act is not None:
        return _act_sentences(act, tuple(sorted(everyday.said_fillers(act, said).items())) if said else ())
    return _all_own_sentences()


@lru_cache(maxsize=1)
def _all_own_sentences() -> tuple[bytes, ...]:
    said = [*everyday.all_replies(), ABSTAIN]
    if paths.primer_file().is_file():
        for dialogue in load_primer(paths.primer_file()):
            if not any(NOTES_HEADER in m["content"] for m in dialogue if m["role"] == "system"):
                said += [m["content"] for m in dialogue if m["role"] == "assistant"]
    return encoded(said)


@lru_cache(maxsize=64)
def _act_sentences(act: str, fillers: tuple[tuple[str, str], ...]) -> tuple[bytes, ...]:
    """One act's replies with the fillers its message said (cached by act and fillers,
    not by message)."""
    return encoded(everyday.topic_replies(act, fixed=dict(fillers)))


def encoded(sentences: Sequence[str]) -> tuple[bytes, ...]:
    return tuple(escape_content(s).encode("utf-8") for s in sentences)


def continuations(sentences: Sequence[bytes], prefix: bytes) -> set[int]:
    """The bytes that follow prefix in the sorted sentences (one bisect per distinct byte)."""
    out: set[int] = set()
    at = bisect_left(sentences, prefix)
    while at < len(sentences) and sentences[at].startswith(prefix):
        if len(sentences[at]) == len(prefix):
            at += 1
            continue
        byte = sentences[at][len(prefix)]
        out.add(byte)
        if byte == 0xFF:
            break
        at = bisect_left(sentences, prefix + bytes([byte + 1]), at)
    return out


def holds(sentences: Sequence[bytes], said: bytes) -> bool:
    at = bisect_left(sentences, said)
    return at < len(sentences) and sentences[at] == said

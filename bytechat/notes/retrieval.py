"""Chat with your notes: retrieve note blocks for a conversation and put them in its
system turn, in the layout the model is trained on (bytechat.notes.blocks.render_notes).

Per user turn, the terminal and the web chat do

    hits = retrieve_for_chat(index, messages, k=3, budget_bytes=notes_budget(block_size, messages))
    prompt = with_notes(messages, hits)     # what the model sees; the conversation keeps no notes

Rules:
- The newest user message decides: if it has no query terms ("hi", "thanks", "who are
  you?") and is not a follow-up, or it is small talk the model is taught ("good
  afternoon!", "I'm happy today": is_small_talk), or, unless it follows up a topic, it
  reads as small talk (intent.reads_as_small_talk: "many thanks, that helps"), no notes
  section is added at all.
- A follow-up (an anaphor, or "and ..."/"what about ...": bytechat.notes.query) is
  searched with the conversation's topic: the latest earlier question that named one and
  the replies to it, below the new message's own words (NotesIndex.search). A message
  that is not a follow-up is searched alone: a new topic ("what's my passport number?")
  gets "none found", not the previous topic's notes.
- Blocks are kept best first while the rendered notes fit budget_bytes (k of them, or a
  whole-page question's PAGE_BLOCKS: NotesIndex.search); with terms but
  nothing found (or nothing that fits), the notes are render_notes([]): "Notes: none found."
- A person's own system prompt stays first; the notes follow it (notes_system_content).
"""

from __future__ import annotations

import functools
import time
from pathlib import Path
from typing import Mapping, Sequence

from rapidfuzz import fuzz, process

from bytechat.core import paths
from bytechat.text.chat_format import format_chat, prompt_budget
from bytechat.notes import intent, roam
from bytechat.notes.blocks import NoteBlock, notes_system_content, render_notes
from bytechat.notes.index import Hit, NotesIndex, NotesIndexError, index_folder, source_name, source_path
from bytechat.notes.dialogues import everyday
from bytechat.notes.query import clauses, is_follow_up, query_terms, words
from bytechat.notes.readers import NotesError

DEFAULT_K = 3
# How close (rapidfuzz's ratio, 0-100, over lower-cased words) each clause of a message
# must be to a small-talk prompt the model is taught for it to be small talk; its topic
# words must also all be words of that small talk ("tell me about Jonas" is 73 from "tell
# me a joke"). Chosen on data this project wrote for it (docs/notes.md): at 70, 8 of 17
# dev small-talk lines with topic words, and none of 682 dev questions about notes nor
# of 2,754 page-question templates filled with page titles, are small talk.
SMALL_TALK_MATCH = 70


def _user_texts(messages: Sequence[Mapping[str, str]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def conversation_topic(messages: Sequence[Mapping[str, str]]) -> list[str]:
    """What a follow-up points back at: the latest earlier user message that names a
    topic, then the replies to it, or [] when the newest message is not a follow-up or
    that message was small talk ("tell me a joke", then "that was funny": the joke is no
    topic of the notes)."""
    if not messages or messages[-1]["role"] != "user" or not is_follow_up(messages[-1]["content"]):
        return []
    earlier = list(messages[:-1])
    for i in range(len(earlier) - 1, -1, -1):
        said = earlier[i]["content"]
        if earlier[i]["role"] == "user" and query_terms(said):
            if is_small_talk(said) or intent.reads_as_small_talk(said):
                return []
            return [said, *(m["content"] for m in earlier[i + 1 :] if m["role"] == "assistant")]
    return []


@functools.lru_cache(maxsize=1)
def _small_talk() -> tuple[str, ...]:
    taught = everyday.chat_prompts()
    parts = [c for p in taught for c in clauses(p)]  # "long day, I'm tired": "long day" is small talk
    return tuple(sorted({" ".join(words(text)) for text in [*taught, *parts]} - {""}))


@functools.lru_cache(maxsize=1)
def _small_talk_words() -> frozenset[str]:
    return frozenset(w for prompt in _small_talk() for w in query_terms(prompt))


def is_small_talk(text: str) -> bool:
    """Whether a message is small talk the model is taught (everyday.chat_prompts), typed
    its own way: each clause that has topic words is within SMALL_TALK_MATCH of one of
    those prompts and has only their topic words ("good afternoon!", "hey, how are you
    today?"; not "tell me about Jonas"), and one clause is."""
    matched = False
    for clause in clauses(text):
        topic = query_terms(clause)
        if not topic:
            continue
        if not set(topic) <= _small_talk_words():
            return False
        if (
            process.extractOne(" ".join(words(clause)), _small_talk(), scorer=fuzz.ratio, score_cutoff=SMALL_TALK_MATCH)
            is None
        ):
            return False
        matched = True
    return matched


def searches(messages: Sequence[Mapping[str, str]]) -> bool:
    """Whether the newest user message names anything to search for: it has query terms,
    or it is a follow-up of a topic ("who wrote it?")."""
    users = _user_texts(messages)
    return bool(users and (query_terms(users[-1]) or conversation_topic(messages)))


def wants_notes(messages: Sequence[Mapping[str, str]]) -> bool:
    """Whether the newest user message asks about anything: it searches (above) and is
    not small talk: not small talk the model is taught (is_small_talk: "good morning" is a
    greeting, not a question about the notes that say "morning"), and, unless it follows
    up a topic, not a message that reads as small talk (intent.reads_as_small_talk:
    "thanks a lot" says nothing about the note that saves "a lot of boilerplate")."""
    if not searches(messages):
        return False
    last = _user_texts(messages)[-1]
    if is_small_talk(last):
        return False
    return bool(conversation_topic(messages)) or not intent.reads_as_small_talk(last)


def notes_budget(block_size: int, messages: Sequence[Mapping[str, str]]) -> int:
    """Bytes the rendered notes may take so that the notes, the system prompt and the
    newest user message fit the prompt budget (3/4 of block_size, as ChatEngine leaves
    the last quarter for the reply). Older turns are what crop_messages drops first."""
    budget = prompt_budget(block_size)  # the 3/4 rule's one home
    system = [m for m in messages[:1] if m["role"] == "system"]
    last = [m for m in messages[-1:] if m["role"] == "user"]
    base = len(format_chat([*system, *last]).encode("utf-8"))
    overhead = 1 if system else len("system: \n")  # the "\n" joining prompt and notes, or a new turn
    return max(0, budget - base - overhead)


def retrieve_for_chat(
    index: NotesIndex, messages: Sequence[Mapping[str, str]], k: int = DEFAULT_K, budget_bytes: int | None = None
) -> list[Hit]:
    """The blocks to show the model for the newest user message, best first (see above)."""
    if not wants_notes(messages):
        return []
    hits = index.search(_user_texts(messages)[-1], k, topic=conversation_topic(messages))
    return [hits[i] for i in fitting([h.block for h in hits], len(hits), budget_bytes)]  # k, or a page's more


def fitting(blocks: Sequence[NoteBlock], k: int, budget_bytes: int | None) -> list[int]:
    """Which blocks (best first) go in the prompt: at most k, each kept while the rendered
    notes still fit budget_bytes. Chat and the grounded training dialogues both use it."""
    kept: list[int] = []
    for i, block in enumerate(blocks):
        if len(kept) == k:
            break
        candidate = [blocks[j] for j in kept] + [block]
        if budget_bytes is None or len(render_notes(candidate).encode("utf-8")) <= budget_bytes:
            kept.append(i)
    return kept


def with_notes(
    messages: Sequence[Mapping[str, str]], hits: Sequence[Hit], budget_bytes: int | None = None
) -> list[dict[str, str]]:
    """The prompt's messages for a turn with notes on: the system turn (the person's
    system prompt, if any, then the notes), the earlier turns that fit, and the newest
    message. A message with no query terms ("thanks!") gets no notes section.

    Earlier turns are kept newest first while the whole prompt (format_chat) fits
    budget_bytes; None keeps them all and leaves the cropping to the engine, whose
    crop_messages drops the oldest turns first by the same rule, so chat (no budget) and
    the training dialogues (the engine's budget, bytechat.notes.dialogues.conversation)
    see the same prompt. The notes are budgeted first (notes_budget counts the system
    prompt and the newest message only), so the conversation fills what they leave: a
    turn's notes never give way to old turns. The conversation itself keeps no notes;
    the training dialogues are multi-turn (issue 29), so a follow-up, a thanks or a new
    topic reads the turns before it."""
    out = [dict(m) for m in messages]
    system = out[0]["content"] if out and out[0]["role"] == "system" else None
    turns = out[1:] if system is not None else out
    if hits or wants_notes(messages):
        system = notes_system_content(render_notes([h.block for h in hits]), system)
    head = [{"role": "system", "content": system}] if system is not None else []
    earlier, last = turns[:-1], turns[-1:]
    if budget_bytes is not None:
        while earlier and len(format_chat([*head, *earlier, *last]).encode("utf-8")) > budget_bytes:
            earlier = earlier[1:]
    return [*head, *earlier, *last]


def sources_payload(hits: Sequence[Hit]) -> list[dict]:
    """What the web API returns as `sources`, best first: each block, and a link that
    opens it in the notes app where the format allows (bytechat.notes.links; "" else)."""
    return [{"page": h.page, "text": h.text, "score": round(float(h.score), 4), "link": h.link} for h in hits]


def notes_in_use() -> Path:
    """The folder the index stage reads (quietly: no example-graph banner here)."""
    return paths.roam_dir() if roam.find_pages(paths.roam_dir()) else paths.example_roam_dir()


def add_notes_arguments(parser) -> None:
    """The flags that choose the notes (--notes, --no-notes, --no-reindex) for the chat
    and the web server alike; open_for_chat takes what they say."""
    notes = parser.add_mutually_exclusive_group()
    notes.add_argument(
        "--notes", metavar="PATH", help="notes index to answer from (default: artifacts/notes/index.sqlite)"
    )
    notes.add_argument("--no-notes", action="store_true", help="answer without your notes")
    parser.add_argument(
        "--no-reindex", action="store_true", help="do not rebuild a stale notes index at start (notes go off instead)"
    )


def open_for_chat(path: str | Path | None = None, reindex: bool = True) -> tuple[NotesIndex | None, str]:
    """(index, one line to show) for chat start-up. path None: the pipeline's index,
    checked against the notes in use; a given path: checked against the folder it was
    built from. A stale index (the notes changed, or, for the pipeline's, it is of an
    older format or from another folder) is rebuilt in place when reindex (seconds even
    for a large graph; written atomically, as the index stage does) and the line says
    so; otherwise, and for a missing, unreadable or empty index, (None, why)."""
    default = path is None
    path = Path(paths.notes_index() if default else path)
    try:
        folder = notes_in_use() if default else None
    except (NotesError, OSError) as exc:  # a bad notes.format in params.yaml, an unreadable folder
        return None, f"notes: off: {str(exc).splitlines()[0]}"
    if default and not path.is_file():
        return None, f"notes: off: {path}: no notes index there (build it with `dvc repro index`)"
    try:
        index = NotesIndex.open(path)
        reason = index.stale_reason(folder)
        if reason and folder is None:
            folder = source_path(index.meta["source"])
    except (NotesIndexError, OSError) as exc:
        if not (default and reindex):
            return None, f"notes: off: {str(exc).splitlines()[0]}"
        index, reason = None, "it is of an older format"
    rebuilt = ""
    if reason:
        if index is not None:
            index.close()
        if not reindex or not folder.is_dir():
            return None, f"notes: off: {path} is stale ({reason}); rebuild it with `dvc repro index`"
        start = time.perf_counter()
        try:
            index = index_folder(folder, path, progress=False)
        except (roam.RoamError, NotesError, NotesIndexError, OSError) as exc:
            return None, f"notes: off: {path} is stale ({reason}) and re-indexing failed: {str(exc).splitlines()[0]}"
        rebuilt = f"; re-indexed {source_name(folder)} in {time.perf_counter() - start:.2f} s: {reason}"
    if not len(index):
        index.close()
        return None, f"notes: off: {path} holds no notes"
    n, pages = len(index), index.pages
    return index, f"notes: on ({n} block{'s' * (n != 1)} from {pages} page{'s' * (pages != 1)}{rebuilt})"

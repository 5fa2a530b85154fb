"""Small talk, measured: the eval's everyday prompts and the small-talk probe, each reply
judged by whether it ends on its own, is made of real words, varies, and leaves the notes
alone (small talk answered with a quote of a note is the wrong reply, however exact).

Sets (bytechat.eval.grounded asks them through the chat path, as it asks questions):
    everyday          EVERYDAY_PROMPTS, small talk written for the eval
    small_talk_dev    data/small-talk-probe.txt, its odd lines: small talk as people type
    small_talk_test     it, written for the small-talk rule (retrieval.is_small_talk); dev
                      chooses, test is kept for the end of a piece of work
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from bytechat.core import paths
from bytechat.data.primer import load_primer
from bytechat.eval.scoring import distinct_2, mean, real_word_rate
from bytechat.notes.dialogues import everyday
from bytechat.serve import copying
from bytechat.serve.own_words import own_sentences
from bytechat.text.chat_format import escape_content

# Small talk a person opens with; written for the eval, never a line of the primer (a test checks).
EVERYDAY_PROMPTS = (
    "hey there",
    "morning! how's it going?",
    "thanks a lot",
    "cheers, that's all for now",
    "see you tomorrow",
    "so what do people call you?",
    "what are you good at?",
    "I'm exhausted",
    "I had a rough day at work",
    "tell me something funny",
    "what's the weather like?",
    "how old are you?",
    "can you recommend a film?",
    "what should I cook tonight?",
    "I can't sleep",
    "do you like music?",
    "who built you, anyway?",
    "what day is it?",
    "nice one",
    "you're not very helpful",
    "are you a robot?",
    "what's 7 times 8?",
    "I'm so bored right now",
    "how do I get started?",
    "talk to you later",
)
PROBE_FILE = Path("data") / "small-talk-probe.txt"
SETS = ("everyday", "small_talk_dev", "small_talk_test")
# How a reply that quotes a note opens: `From [Page] ...`, or the primer's "On your X page: ..."
# (the openings faithful decoding keeps to a quote).
QUOTE_OPENINGS = (copying.OPENING.decode("utf-8"), copying.FRAMED.decode("utf-8"))


def probe(root: Path | None = None, untaught: bool = False) -> dict[str, list[str]]:
    """The probe's lines by split (odd lines dev, even test); {} without the file.
    untaught: less the lines training writes (taught_texts: "good afternoon!" is a prompt
    of dialogues.everyday, "who made you?" a primer turn), as the eval asks only what no
    model trains on."""
    path = (root or paths.root()) / PROBE_FILE
    if not path.is_file():
        return {}
    lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    texts = taught_texts() if untaught else []
    parts = {"small_talk_dev": lines[0::2], "small_talk_test": lines[1::2]}
    return {name: [line for line in part if not is_taught(line, texts)] for name, part in parts.items()}


def taught_texts() -> list[str]:
    """Every message training writes word for word, lower-cased: the small talk of
    dialogues.everyday (prompts and replies) and the primer's turns."""
    said = [*everyday.all_prompts(), *everyday.all_replies()]
    if paths.primer_file().is_file():
        said += [m["content"] for d in load_primer(paths.primer_file()) for m in d]
    return [text.lower() for text in said]


def is_taught(line: str, texts: Sequence[str]) -> bool:
    """Whether training holds line: as a whole message, or (20 characters or more) inside one."""
    line = line.lower()
    return any(line == t or (len(line) >= 20 and line in t) for t in texts)


def small_talk_metrics(results: Sequence) -> dict[str, float]:
    """Per set: stop rate, reply length, real-word rate (scoring.is_english), distinct-2,
    `quoted`, the share of replies that quote a note ("thanks a lot" answered
    `From [Rust] ...`), and `taught_sentence`, the share that are a whole sentence
    training teaches (own_words.own_sentences: written by hand, so grammatical; the
    issue's grammar proxy)."""
    replies = [r.reply for r in results]
    taught = set(own_sentences())  # as the reply's bytes are written (escaped)
    return {
        "prompts": len(results),
        "stop_rate": mean(r.finish == "stop" for r in results),
        "mean_reply_bytes": mean(len(r.encode("utf-8")) for r in replies),
        "real_word_rate": real_word_rate(replies),
        "distinct_2": distinct_2(replies),
        "quoted": mean(r.startswith(QUOTE_OPENINGS) for r in replies),
        "taught_sentence": mean(escape_content(r).encode("utf-8") in taught for r in replies),
    }

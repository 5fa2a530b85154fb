"""Faithful-copy decoding: a reply that starts quoting a note can only quote it verbatim.

Trained with `grounded.answers: quote`, the model answers `From [Page] <block text>`, a
quote of one block the prompt shows. Decoding freely, it often picks the right block and
then copies it badly (a loop, a skipped line: docs/notes.md, "Where the model loses to the
search box"). With `SamplingConfig(faithful=True)` the sampler keeps the reply on the page:

- while the reply is a prefix of `From [` (or is empty), nothing is constrained; a reply
  that does not start with `From [` (an abstention, small talk) is never constrained;
- once it starts with `From [`, every next byte must keep it a prefix of some shown quote
  `From [Page] <block text>` (exactly the bytes training writes: grounded.quoted, the
  chat format's escaping), or of an attribute's quote without its key (`From [Jonas] 14
  February`, as `grounded.answers: value` teaches), so the MODEL still chooses which
  shown block it quotes;
- the reply may end (the first byte of a stop tag, "\\n", then the rest of a tag) at
  any character boundary from the page name's "]" on, so the model also chooses where
  to stop; once the reply is a whole quote that no longer shown quote extends, the end
  is forced. Inside a quote the repeat guard is off (restrict): a quote cannot loop.

The quotes come from the prompt itself (its system turn's notes, laid out by
bytechat.notes.blocks.render_notes), so generate_bytes and the batch engine need only the
prompt bytes and the switch. A prompt without notes constrains nothing. The constraint is
applied as an allowed set: sample_rows sets every other byte's score to -inf before
top-k, temperature and top-p (greedy takes the best allowed byte).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from bytechat.notes.blocks import NOTES_HEADER
from bytechat.notes.dialogues.spans import KEY_VALUE
from bytechat.notes.grounded import ANSWER_PREFIX
from bytechat.serve.sampling import RepeatGuard
from bytechat.text.chat_format import STOP_TAGS, ChatFormatError, escape_content, parse_chat

# Whether chat and the web API decode faithfully unless told otherwise (--no-faithful,
# "faithful": false); the eval stage's own switch is params.yaml eval.faithful. On: better
# answer_f1 on heldout_train, heldout_val and natural_dev, same abstentions (docs/chat.md).
# SamplingConfig itself defaults to off, so library callers (the answer probe, tools) sample freely.
SHIPPED = True
OPENING = (ANSWER_PREFIX + "[").encode("utf-8")  # b"From [": from here on, a reply is a quote
_TAGS = tuple(tag.encode("utf-8") for tag in STOP_TAGS)  # b"\nuser: ", ...
_NEWLINE = b"\n"


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


class FaithfulCopy:
    """Which next bytes keep a reply a faithful quote of one of `entries` (see above).

    `allowed(produced)` is None (unconstrained) or the sorted byte values the reply may
    go on with. It reads the whole reply each time (a few bytes.startswith per shown
    block), so it holds no state and a batch row or a refilled window cannot desync it.
    """

    def __init__(self, entries: Sequence[str]) -> None:
        self.quotes: list[bytes] = []
        self.first_stop: list[int] = []  # per quote: the reply may end once it is this long
        for entry in entries:
            for said in (entry, *_without_key(entry)):
                quote = escape_content(ANSWER_PREFIX + said).encode("utf-8")
                if quote not in self.quotes:
                    self.quotes.append(quote)
                    self.first_stop.append(len(OPENING) + quote[len(OPENING) :].index(b"] ") + 1)

    @classmethod
    def from_messages(cls, messages: Sequence[Mapping[str, str]]) -> FaithfulCopy | None:
        entries = shown_entries(messages)
        return cls(entries) if entries else None

    @classmethod
    def from_prompt(cls, prompt: bytes) -> FaithfulCopy | None:
        """The machine for the notes a chat prompt shows; None when it shows none."""
        return cls.from_messages(prompt_messages(prompt))

    def allowed(self, produced: bytes | bytearray) -> list[int] | None:
        reply = bytes(produced)
        if not reply.startswith(OPENING):
            return None  # still (a prefix of) "From [", or not a quote at all
        nexts: set[int] = set()
        cut = reply.rfind(_NEWLINE)
        tail = reply[cut:] if cut >= 0 else b""  # a stop tag being written: "\n", "\nus", ...
        for quote, first_stop in zip(self.quotes, self.first_stop):
            if quote.startswith(reply):
                if len(reply) < len(quote):
                    nexts.add(quote[len(reply)])
                if len(reply) >= first_stop and _boundary(quote, len(reply)):
                    nexts.add(_NEWLINE[0])
            if tail and cut >= first_stop and _boundary(quote, cut) and quote.startswith(reply[:cut]):
                nexts.update(tag[len(tail)] for tag in _TAGS if len(tag) > len(tail) and tag.startswith(tail))
        # Empty only if the reply left the quotes before the constraint applied (a switch
        # turned on mid-reply): then nothing is constrained rather than nothing allowed.
        return sorted(nexts) if nexts else None


def _without_key(entry: str) -> list[str]:
    """An attribute's entry as `grounded.answers: value` quotes it, its key left out
    ("[Jonas] Birthday: 14 February" -> "[Jonas] 14 February"); [] for other blocks."""
    page, _, text = entry.partition("] ")
    head = KEY_VALUE.match(text.split("\n", 1)[0])
    return [f"{page}] {text[head.start(2) :]}"] if head else []


def _boundary(quote: bytes, at: int) -> bool:
    """Whether a reply may end after quote[:at]: not inside a UTF-8 character."""
    return at >= len(quote) or not 0x80 <= quote[at] < 0xC0


def copy_guard(prompt: bytes, faithful: bool) -> FaithfulCopy | None:
    """The machine generate_bytes and the batch engine decode a prompt's reply with:
    None when the switch is off or the prompt shows no notes."""
    return FaithfulCopy.from_prompt(prompt) if faithful else None


def restrict(copy: FaithfulCopy | None, guard: RepeatGuard, produced: bytearray) -> tuple[list[int], list[int] | None]:
    """(banned, allowed) for the reply's next byte (a Draw's last two fields). Inside a
    quote the repeat guard is off: a quote cannot loop (it only moves forward through a
    shown block), and a block that repeats a 16-byte run of itself must still be quoted."""
    allowed = copy.allowed(produced) if copy is not None else None
    return ([], allowed) if allowed is not None else (guard.banned(produced), None)

"""Sampling: a row of next-byte log-probabilities and its settings -> the next byte.

`sample_rows` is the one sampler. generate_bytes calls it with its one row, the batch
engine with every row of a step; so the repeat guard's bans, the non-finite check, greedy
decoding, top-k, temperature and top-p are written once, and a reply samples the same
bytes whichever path decodes it.

Each row draws from its own torch.Generator only, so a seed reproduces a reply whatever
else the process does. A generator may live on the CPU while the model is on a GPU: the
scores are moved to the generator's device to sample.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch

# Temperatures below this sample like 0 (greedy). At 1e-6 a logit gap of 1e-4 already
# weighs exp(-100) against the runner-up, so the draw is the argmax in all but exact ties;
# far below it, 1 / temperature overflows float32 (1e-300 gave inf/nan probabilities).
GREEDY_BELOW = 1e-6
# A banned byte's score: this far below the row's lowest (finite, so the non-finite check
# still means "the model is broken"), so it is never drawn.
BAN_MARGIN = 1e4


@dataclass(frozen=True, init=False)
class SamplingConfig:
    """How a reply is sampled. `max_new_tokens=` is still accepted for max_new_bytes (the
    web API's field and older callers use it; it always counted bytes), and read back as
    the `max_new_tokens` property."""

    # 0.3: a small model quoting a note keeps to it; at 0.8 replies drifted mid-quote and
    # small talk turned to word salad (docs/chat.md). 0 (or below GREEDY_BELOW) = greedy.
    temperature: float
    top_k: int | None  # keep the k most likely bytes; None or 0 = off
    top_p: float | None  # then the smallest set with this much probability; None or 1.0 = off
    max_new_bytes: int  # the reply's length cap, in bytes
    # Never emit a byte that would repeat a run of this many bytes the reply already holds
    # (RepeatGuard); 0 = off. The prompt is not counted: quoting a note is copying.
    repeat_guard: int
    # A reply that starts "From [" may only quote a note the prompt shows, verbatim, and
    # end after the page name or at the quote's end (bytechat/serve/copying.py).
    faithful: bool

    def __init__(
        self,
        temperature: float = 0.3,
        top_k: int | None = 50,
        top_p: float | None = 0.95,
        max_new_bytes: int = 512,
        repeat_guard: int = 16,
        faithful: bool = False,
        *,
        max_new_tokens: int | None = None,
    ) -> None:
        length_name = "max_new_bytes"
        if max_new_tokens is not None:
            max_new_bytes, length_name = max_new_tokens, "max_new_tokens"
        values = dict(
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            max_new_bytes=max_new_bytes,
            repeat_guard=repeat_guard,
            faithful=faithful,
        )
        for name, value in values.items():
            object.__setattr__(self, name, value)

        def bad(name: str, problem: str) -> ValueError:
            value = values["max_new_bytes" if name == length_name else name]
            return ValueError(f"sampling.{name}: {problem} (got {value!r})")

        if not isinstance(temperature, (int, float)) or not 0.0 <= temperature <= 10.0:
            raise bad("temperature", "must be a number in [0, 10]")
        if top_k is not None and (not isinstance(top_k, int) or top_k < 0):
            raise bad("top_k", "must be an integer >= 0 (0 = off)")
        if top_p is not None and (not isinstance(top_p, (int, float)) or not 0.0 < top_p <= 1.0):
            raise bad("top_p", "must be in (0, 1] (1 = off)")
        if not isinstance(max_new_bytes, int) or max_new_bytes < 1:
            raise bad(length_name, "must be an integer >= 1")
        if not isinstance(repeat_guard, int) or repeat_guard < 0 or repeat_guard == 1:
            raise bad("repeat_guard", "must be 0 (off) or an integer >= 2")
        if not isinstance(faithful, bool):
            raise bad("faithful", "must be true or false")

    @property
    def max_new_tokens(self) -> int:
        return self.max_new_bytes

    @property
    def greedy(self) -> bool:
        return self.temperature < GREEDY_BELOW


class RepeatGuard:
    """Which bytes would repeat an n-byte run already in the reply (no_repeat_ngram_size,
    as in Hugging Face's generate, on bytes).

    A small model decoding greedily falls into loops ("of milk of milk of milk ..."), and
    a copy head makes them stickier: the loop itself becomes context worth copying.
    Banning the byte that would complete a repeated n-byte run breaks every loop after
    at most one period plus n bytes. O(1) per byte: a map from the last n-1 bytes to the
    bytes that followed them before.
    """

    def __init__(self, n: int) -> None:
        self.n = n
        self._followers: dict[bytes, set[int]] = {}

    def banned(self, produced: bytearray) -> list[int]:
        if not self.n or len(produced) < self.n - 1:
            return []
        return sorted(self._followers.get(bytes(produced[len(produced) - self.n + 1 :]), ()))

    def add(self, produced: bytearray) -> None:
        """Record the run that the newest byte of produced completes."""
        if self.n and len(produced) >= self.n:
            self._followers.setdefault(bytes(produced[-self.n : -1]), set()).add(produced[-1])


class NonFiniteLogits(ValueError):
    """The model produced nan or inf scores: nothing sensible can be sampled."""

    def __init__(
        self, message: str = "sampling: the model produced non-finite logits (nan or inf); the weights are broken"
    ) -> None:
        super().__init__(message)


class Draw(NamedTuple):
    """What one row is sampled with: its settings, its generator, the bytes it may not
    emit, (None: any) the only bytes it may emit (copying.FaithfulCopy.allowed), and the
    bytes whose score is lowered by a margin, in nats (copying.FaithfulCopy.lowered)."""

    sampling: SamplingConfig
    generator: torch.Generator
    banned: Sequence[int] = ()
    allowed: Sequence[int] | None = None
    lowered: Sequence[int] = ()
    margin: float = 0.0


def candidates(scores: torch.Tensor, sampling: SamplingConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(probs, ids) of the bytes sampling may draw from finite fp32 scores (..., 256), most
    likely first: top-k, temperature, top-p."""
    # Work on the candidates sorted by probability: topk returns them sorted already,
    # and top-p needs them sorted anyway.
    if sampling.top_k and sampling.top_k < scores.shape[-1]:
        values, ids = scores.topk(sampling.top_k, dim=-1)
    else:
        values, ids = scores.sort(dim=-1, descending=True)
    # Shift so the best is 0 before dividing: every scaled value is then in [-inf, 0],
    # finite or -inf, and softmax never sees an overflow.
    probs = ((values - values[..., :1]) / sampling.temperature).softmax(dim=-1)
    if sampling.top_p is not None and sampling.top_p < 1.0:
        # Drop a candidate once the more likely ones already cover top_p. The most likely
        # one always stays (even when top_p rounds to 0 in float32), so the kept mass is
        # never empty.
        drop = (probs.cumsum(dim=-1) - probs) >= sampling.top_p
        drop[..., 0] = False
        probs = probs.masked_fill(drop, 0.0)
    return probs, ids


def sample_rows(scores: torch.Tensor, draws: Sequence[Draw]) -> list[int | NonFiniteLogits]:
    """The next byte of each row of scores (R, 256): next-byte log-probabilities (or any
    scores softmax turns into the distribution), row r sampled as draws[r] says.

    A row with a nan or inf score gets a NonFiniteLogits in place of its byte (one line,
    instead of a crash inside torch.multinomial). Row r's lowered bytes lose its margin;
    its banned bytes are pushed
    BAN_MARGIN below its lowest score; with an allowed set, every other byte's score is
    -inf (so an allowed byte is drawn even when the bans cover them all). Temperatures
    below GREEDY_BELOW are greedy; the most likely byte always survives top-k and top-p,
    however small top_p is, so every SamplingConfig that validates samples. Rows that share settings go through each
    step together (every step works row by row, so a row gets the same values as
    alone); each row then draws from its own generator.
    """
    out: list[int | NonFiniteLogits] = [0] * len(draws)
    groups: dict[tuple, list[int]] = {}
    for i, (sp, generator, *_) in enumerate(draws):
        key = (True, generator.device) if sp.greedy else (False, generator.device, sp.temperature, sp.top_k, sp.top_p)
        groups.setdefault(key, []).append(i)
    for (greedy, device, *_), members in groups.items():
        rows = scores[members] if len(members) < scores.shape[0] else scores
        rows = rows.to(device, torch.float32, copy=True)  # a copy: the bans must not reach the caller's tensor
        finite = torch.isfinite(rows).all(dim=-1)  # before the masks: an allowed set's -inf is not the model's
        for row, i in enumerate(members):
            if draws[i].lowered:
                rows[row, list(draws[i].lowered)] -= draws[i].margin
            if draws[i].banned:
                rows[row, list(draws[i].banned)] = rows[row].min() - BAN_MARGIN
            if draws[i].allowed:  # (None or empty: every byte)
                keep = torch.zeros(rows.shape[-1], dtype=torch.bool, device=rows.device)
                keep[list(draws[i].allowed)] = True
                rows[row].masked_fill_(~keep, float("-inf"))
        if not bool(finite.all()):
            ok = finite.tolist()
            for row, i in enumerate(members):
                if not ok[row]:
                    out[i] = NonFiniteLogits()
            members = [i for row, i in enumerate(members) if ok[row]]
            rows = rows[finite]
            if not members:
                continue
        if greedy:
            for i, byte in zip(members, rows.argmax(dim=-1).tolist()):
                out[i] = byte
            continue
        probs, ids = candidates(rows, draws[members[0]].sampling)
        for row, i in enumerate(members):
            choice = torch.multinomial(probs[row : row + 1], 1, generator=draws[i].generator)
            out[i] = int(ids[row, choice])
    return out


def sample_next(scores: torch.Tensor, sampling: SamplingConfig, generator: torch.Generator) -> torch.Tensor:
    """sample_rows for scores (..., 256) whose rows share one setting and one generator
    (drawn row after row); a long tensor of shape (...). Raises NonFiniteLogits."""
    flat = scores.reshape(-1, scores.shape[-1])
    picked = sample_rows(flat, [Draw(sampling, generator)] * flat.shape[0])
    for byte in picked:
        if isinstance(byte, NonFiniteLogits):
            raise byte
    return torch.tensor(picked, dtype=torch.long).view(scores.shape[:-1])

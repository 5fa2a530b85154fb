"""Generation: KV-cache decoding of one reply, and the reply-level streaming API.

Layers, bottom up:
  sampling.sample_rows  a row's next-byte log-probabilities -> one byte (the one sampler)
  generate_bytes        prompt bytes -> iterator of new bytes: one GPT.forward per byte
                        on a one-row KV cache, stop strings, window refills
  ChatEngine            chat messages -> ReplyEvent text pieces, then one ReplyDone
                        (used by the terminal chat and the web server)

The batched server (batch_engine.py) decodes many replies through the same GPT.forward,
sampler, prefill and refill functions, so a reply is the same whichever decodes it.
"""

from __future__ import annotations

import os
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Mapping

import torch

from bytechat.core.config import to_dict
from bytechat.core.rng import make_generator
from bytechat.model import GPT, KVCache
from bytechat.model.compiled import DecodeStep, start_line
from bytechat.serve.copying import copy_guard, restrict
from bytechat.serve.span_answer import answer_span

# SamplingConfig and NonFiniteLogits are imported from here by the CLI, the server and
# the evals; GREEDY_BELOW is named here in docs/hardening.md.
from bytechat.serve.sampling import (  # noqa: F401
    GREEDY_BELOW,
    Draw,
    NonFiniteLogits,
    RepeatGuard,
    SamplingConfig,
    sample_rows,
)
from bytechat.text.chat_format import ASSISTANT_PROMPT, STOP_TAGS, format_chat, prompt_budget, render_transcript
from bytechat.text.tokenizer import VOCAB_SIZE, StreamDecoder

THREADS_ENV = "BYTECHAT_THREADS"
COMPILE_ENV = "BYTECHAT_COMPILE"


def prefill(model: GPT, window: bytes | bytearray, cache: KVCache | None, device: torch.device) -> torch.Tensor:
    """Run the whole window from position 0 (into cache, emptied first, if given); the
    last position's next-byte log-probabilities (256,)."""
    idx = torch.tensor([list(window)], dtype=torch.long, device=device)
    if cache is not None:
        cache.reset()
    log_probs, _ = model(idx, cache=cache)
    return log_probs[0, -1]


def refill(model: GPT, window: bytearray, cache: KVCache, keep: int, device: torch.device) -> None:
    """The cache is full: keep the window's last `keep` bytes and prefill all but the
    newest into the emptied cache, which then takes the newest byte as usual (so
    every byte, after a refill too, is one forward of one new position per row)."""
    del window[:-keep]
    cache.reset()
    if len(window) > 1:
        model(torch.tensor([list(window[:-1])], dtype=torch.long, device=device), cache=cache)


def next_byte(
    log_probs: torch.Tensor,
    sampling: SamplingConfig,
    generator: torch.Generator,
    banned=(),
    allowed=None,
    lowered=(),
    margin: float = 0.0,
) -> int:
    """sample_rows for one row; raises NonFiniteLogits."""
    byte = sample_rows(log_probs.unsqueeze(0), [Draw(sampling, generator, banned, allowed, lowered, margin)])[0]
    if isinstance(byte, NonFiniteLogits):
        raise byte
    return byte


@torch.inference_mode()  # torch re-enters this around each next(), so it never leaks to the caller
def generate_bytes(
    model: GPT,
    prompt: bytes,
    sampling: SamplingConfig,
    generator: torch.Generator,
    stop: Iterable[str | bytes] = (),
    device: torch.device | str | None = None,
    should_stop: Callable[[], bool] | None = None,
    use_cache: bool = True,
    step: DecodeStep | None = None,
    answer_style: str | None = None,
    abstain_margin: float | None = None,
) -> Iterator[int]:
    """Yield each new byte as it is produced.

    Stops after the byte that makes the generated text (not the prompt) end with a stop
    string (that byte and the rest of the stop string are yielded), after
    sampling.max_new_bytes bytes, or before sampling a byte once should_stop() is true.
    The generator's return value (StopIteration.value) says which: "stop", "length" or
    "cancelled". Only the last block_size bytes of the prompt are seen; when the cache is
    full, the last block_size // 2 bytes are prefilled again and decoding goes on.
    use_cache=False recomputes the whole window for every byte (for tests/benchmarks);
    step decodes each byte with that DecodeStep (compiled) on its static cache.
    sampling.faithful: a reply that starts "From [" quotes notes the prompt shows,
    verbatim (a fact question's: the span the model's span head points at, span_answer.py);
    any other reply is one of the bot's own sentences (bytechat/serve/copying.py;
    answer_style and abstain_margin: the model's, from its checkpoint or export, which
    copy_guard reads).
    """
    if not prompt:
        raise ValueError("generate_bytes: prompt must not be empty (the model needs a byte to condition on)")
    stops = tuple(s.encode("utf-8") if isinstance(s, str) else bytes(s) for s in stop)
    device = torch.device(device) if device is not None else model.wte.weight.device
    block = model.config.block_size
    keep = max(1, block // 2)
    text = bytearray(prompt[-block:])  # what the model currently sees
    cache = (step.new_cache() if step is not None else model.new_cache()) if use_cache else None
    log_probs = prefill(model, text, cache, device)
    produced = bytearray()
    guard = RepeatGuard(sampling.repeat_guard)
    span = answer_span(model, prompt) if sampling.faithful else None  # a fact question's answer, pointed at
    copy = copy_guard(prompt, sampling.faithful, answer_style, sampling.max_new_bytes, abstain_margin, span)
    one = torch.empty((1, 1), dtype=torch.long, device=device)  # reused: no allocation per byte
    for i in range(sampling.max_new_bytes):
        if should_stop is not None and should_stop():
            return "cancelled"
        byte = next_byte(log_probs, sampling, generator, *restrict(copy, guard, produced))
        produced.append(byte)
        guard.add(produced)
        text.append(byte)
        yield byte
        if stops and produced.endswith(stops):
            return "stop"
        if i + 1 == sampling.max_new_bytes:
            break  # no forward pass for a byte that will never be sampled
        if cache is None:
            del text[:-block]
            log_probs = prefill(model, text, None, device)
            continue
        if cache.length == block:
            refill(model, text, cache, keep, device)
        one.fill_(byte)
        log_probs = step(one, cache)[0] if step is not None else model(one, cache=cache)[0][0, -1]
    return "length"


def compile_wanted(no_compile: bool = False) -> bool:
    """Whether the chat CLI and the server compile their decode step: yes, unless
    --no-compile or $BYTECHAT_COMPILE == "0" (the tests' setting: compiling costs ~30 s)."""
    return not no_compile and os.environ.get(COMPILE_ENV, "1") != "0"


def set_decode_threads(n: int | None = None) -> int:
    """Set torch's (process-wide) intra-op thread count for batch-1 decoding on CPU.

    n None: $BYTECHAT_THREADS, else 1. Batch-1 decoding is many tiny ops per byte plus
    weight reads: a second thread gains little on an idle machine and loses much when
    another process is busy on the other core (OpenMP waits for it at every op; figures
    in docs/performance.md, "Threads"). Concurrent requests get parallelism from the
    batch engine instead. Call once at program start (the chat CLI does); returns n.
    """
    if n is None:
        raw = os.environ.get(THREADS_ENV, "1")
        try:
            n = int(raw)
        except ValueError:
            raise ValueError(f"{THREADS_ENV}: expected a positive integer, got {raw!r}") from None
    if n < 1:
        raise ValueError(f"{THREADS_ENV}/threads: must be >= 1 (got {n})")
    torch.set_num_threads(n)
    return n


# ---------------------------------------------------------------- reply-level API

_ROLE_TAGS = tuple(tag[1:].encode("utf-8") for tag in STOP_TAGS)  # b"system: ", b"user: ", ...
_NEWLINE, _BACKSLASH = 0x0A, b"\\"


class ReplyAssembler:
    """Generated bytes in, reply text pieces out, matching extract_assistant_reply.

    A "\\n" may start a role tag, so it (with any newlines right after it) and what
    follows are held back while they could still become "\\n" + backslashes + "role: ".
    Then: no backslash means a real turn boundary (the reply is over: `stopped`, and the
    held newlines are dropped, as trailing); one or more means escaped content, emitted
    with one backslash removed; anything else is emitted as is. Bytes then go through an
    incremental UTF-8 decoder, so no piece ends in half a character.
    """

    def __init__(self) -> None:
        self._decoder = StreamDecoder()
        self._held = bytearray()
        self._pieces: list[str] = []
        self.stopped = False

    @property
    def reply(self) -> str:
        return "".join(self._pieces)

    def feed(self, byte: int) -> str:
        if self.stopped:
            raise RuntimeError("ReplyAssembler.feed: the reply already ended with a role tag")
        out = bytearray()
        self._push(byte, out)
        return self._emit(self._decoder.feed(bytes(out)) if out else "")

    def finish(self) -> str:
        """End of generation: release held bytes. Held without a backslash they were on
        their way to a turn boundary when the length limit cut them ("...\\nassist"), or
        were a line of content cut after its first few letters: either way they are
        dropped, as extract_assistant_reply drops them (an escaped line, cut, is content)."""
        out, self._held = bytes(self._held), bytearray()
        if _BACKSLASH not in out:
            out = b""
        return self._emit(self._decoder.feed(out) + self._decoder.flush())

    def _emit(self, text: str) -> str:
        if text:
            self._pieces.append(text)
        return text

    def _push(self, byte: int, out: bytearray) -> None:
        held = self._held
        if not held:
            (held if byte == _NEWLINE else out).append(byte)
            return
        held.append(byte)
        newlines = len(held) - len(held.lstrip(b"\n"))
        if newlines == len(held):
            return  # only newlines so far: hold them (before a turn boundary they are dropped)
        rest = bytes(held[newlines:]).lstrip(_BACKSLASH)
        n_backslashes = len(held) - newlines - len(rest)
        if rest in _ROLE_TAGS:
            if n_backslashes == 0:
                self.stopped = True  # a turn boundary; the newlines before it end the reply
            else:
                out += held[:newlines] + held[newlines + 1 :]  # unescape: drop one backslash
            held.clear()
        elif not any(tag.startswith(rest) for tag in _ROLE_TAGS):
            last = held.pop()  # may itself be a "\n" that starts a new candidate
            out += held
            held.clear()
            self._push(last, out)


@dataclass
class ReplyEvent:
    text: str  # a decoded piece of the reply (never half a UTF-8 character)


@dataclass
class ReplyDone:
    reply: str  # the whole reply: the concatenation of all ReplyEvent texts
    finish_reason: str  # "stop" (a role tag was produced) | "length" (max_new_bytes) | "cancelled"
    n_bytes: int  # bytes the model generated, including a final role tag
    seconds: float  # wall time of the whole call, prefill included


def _rendered_bytes(messages: list[Mapping[str, str]]) -> int:
    return len(format_chat(messages).encode("utf-8"))


def _with_content(message: Mapping[str, str], content: str) -> dict[str, str]:
    return {**message, "content": content}


def _keep_tail(text: str, n_bytes: int) -> str:
    """The end of text, at most n_bytes of UTF-8 (never half a character)."""
    data = text.encode("utf-8")
    return data[max(0, len(data) - n_bytes) :].decode("utf-8", errors="ignore") if n_bytes > 0 else ""


def _keep_head(text: str, n_bytes: int) -> str:
    """The start of text, at most n_bytes of UTF-8 (never half a character)."""
    return text.encode("utf-8")[: max(0, n_bytes)].decode("utf-8", errors="ignore")


def _shrink(messages: list, index: int, max_bytes: int, cut: Callable[[str, int], str]) -> None:
    """Cut messages[index]'s content with cut(content, n_bytes) until format_chat fits."""
    while _rendered_bytes(messages) > max_bytes and messages[index]["content"]:
        content = messages[index]["content"]
        excess = _rendered_bytes(messages) - max_bytes
        # Escapes in content only ever make the rendering longer, so cutting the excess
        # from the raw content gets there in one or two rounds.
        messages[index] = _with_content(messages[index], cut(content, len(content.encode("utf-8")) - excess))


def crop_messages(messages: list[Mapping[str, str]], max_bytes: int) -> list[Mapping[str, str]]:
    """Fit format_chat(messages) in max_bytes, keeping the start of the prompt in view.

    1. Drop whole turns, oldest first; a leading system message and the last message stay.
    2. Still too long: shorten the last message from its start (its end is what the
       reply answers), so "system: ..." and the last turn's "user: " header stay in the
       window instead of being pushed out of the model's view.
    3. If the system message leaves the last one under half the budget, the system
       content is shortened from its end first.
    Only a budget too small for the bare role headers can leave the result too long.
    """
    messages = list(messages)
    render_transcript(messages)  # a malformed message is a ChatFormatError, even an old one
    first = 1 if messages and messages[0]["role"] == "system" else 0
    # format_chat is each "role: content" line plus "\n", then "assistant: ".
    sizes = [len(render_transcript([m]).encode("utf-8")) + 1 for m in messages]
    total = sum(sizes) + len(ASSISTANT_PROMPT.encode("utf-8"))
    keep_from = first
    while len(messages) - keep_from > 1 and total > max_bytes:
        total -= sizes[keep_from]
        keep_from += 1
    cropped = messages[:first] + messages[keep_from:]
    if total <= max_bytes or len(cropped) <= first:
        return cropped
    if first:
        last_bytes = len(cropped[-1]["content"].encode("utf-8"))
        wanted = min(last_bytes, max_bytes // 2)  # room the last message may claim
        room = max_bytes - (total - last_bytes)  # what the system message leaves it
        if room < wanted:
            cropped[0] = _with_content(
                cropped[0],
                _keep_head(cropped[0]["content"], len(cropped[0]["content"].encode("utf-8")) - (wanted - room)),
            )
    _shrink(cropped, len(cropped) - 1, max_bytes, _keep_tail)
    if first:
        _shrink(cropped, 0, max_bytes, _keep_head)
    return cropped


class ChatEngine:
    """Replies to chat message lists with one shared model; safe to call from several
    threads at once (each call has its own KV cache and random generator).

    Takes over the model: puts it in eval mode (and moves it to device, if given) and on
    the CPU stores its weights in the decode layout. info describes where the model came
    from (load_model's info dict); model_info adds params, model_config and device.
    compile: decode each byte with a compiled step (model/compiled.py; it compiles at
    warm_up(), else at the first reply, and falls back to eager with one line); None:
    $BYTECHAT_COMPILE == "1" (the chat CLI and the server compile unless it is "0").
    """

    def __init__(
        self,
        model: GPT,
        device: torch.device | str | None = None,
        info: dict | None = None,
        compile: bool | None = None,
    ) -> None:
        if model.config.vocab_size != VOCAB_SIZE:
            raise ValueError(
                f"ChatEngine: model vocab_size is {model.config.vocab_size}; bytechat models read bytes and need {VOCAB_SIZE}"
            )
        if device is not None:
            model.to(torch.device(device))
        self.model = model.eval()
        self.device = model.wte.weight.device
        if self.device.type == "cpu":
            model.use_decode_layout()  # same values, faster batch-1 matmuls (see GPT.use_decode_layout)
        self.block_size = model.config.block_size
        self.prompt_budget = prompt_budget(self.block_size)  # bytes; the rest of the window is the reply's
        self.model_info = dict(info or {})
        self.model_info.setdefault("params", model.num_params())
        self.model_info.setdefault("model_config", to_dict(model.config))
        self.model_info["device"] = str(self.device)
        self.answer_style = self.model_info.get("answer_style")  # how it was taught to answer: copy_guard
        self.abstain_margin = self.model_info.get("abstain_margin")  # how sure it must be to refuse: copy_guard
        if compile is None:
            compile = os.environ.get(COMPILE_ENV, "0") == "1"
        self.step = DecodeStep(model) if compile else None

    def warm_up(self) -> str:
        """Compile the decode step of a reply decoded alone now, with a progress bar; the
        one start-up line that says how the engine decodes (BatchEngine.warm_up: batched)."""
        seconds = self.step.warm_up((1,)) if self.step is not None else 0.0
        return start_line(self.step, seconds, (1,))

    def stream_reply(
        self,
        messages: list[Mapping[str, str]],
        sampling: SamplingConfig,
        seed: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Iterator[ReplyEvent | ReplyDone]:
        """ReplyEvents as the reply is generated, then exactly one ReplyDone.

        Bad messages raise ChatFormatError (a ValueError) here, before anything streams.
        seed None draws a fresh random seed; a given seed reproduces the reply.
        """
        if not isinstance(sampling, SamplingConfig):
            raise TypeError("stream_reply: sampling must be a SamplingConfig")
        prompt = format_chat(crop_messages(messages, self.prompt_budget)).encode("utf-8")
        generator = make_generator(seed if seed is not None else secrets.randbits(63))
        return self._stream(prompt, sampling, generator, should_stop)

    def _stream(self, prompt: bytes, sampling: SamplingConfig, generator: torch.Generator, should_stop):
        start = time.perf_counter()
        assembler = ReplyAssembler()
        gen = generate_bytes(
            self.model,
            prompt,
            sampling,
            generator,
            STOP_TAGS,
            self.device,
            should_stop,
            step=self.step,
            answer_style=self.answer_style,
            abstain_margin=self.abstain_margin,
        )
        n_bytes = 0
        while True:
            try:
                byte = next(gen)
            except StopIteration as end:
                finish_reason = end.value
                break
            n_bytes += 1
            piece = assembler.feed(byte)
            if piece:
                yield ReplyEvent(piece)
        tail = assembler.finish()
        if tail:
            yield ReplyEvent(tail)
        yield ReplyDone(assembler.reply, finish_reason, n_bytes, time.perf_counter() - start)

    def reply(self, messages: list[Mapping[str, str]], sampling: SamplingConfig, seed: int | None = None) -> ReplyDone:
        done = None
        for event in self.stream_reply(messages, sampling, seed):
            if isinstance(event, ReplyDone):
                done = event
        return done

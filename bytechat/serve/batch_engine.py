"""Continuous batching: many replies decoded together, one forward pass per byte for all.

A small model's batch-1 decoding step is almost all fixed cost (dispatching ~150 tiny
ops, reading every weight once), so sixteen replies decoded one by one take sixteen
times as long as one, where one batched step for all sixteen costs little more than a
single one. BatchEngine keeps a batch of active replies, each in its own rows of one
shared KV cache (slot), with its own position, sampling settings, torch.Generator,
repeat guard, stop strings and ReplyAssembler. Every step():

  1. admits waiting requests into free slots: each prompt is prefilled alone, as
     generate_bytes prefills it, straight into its slot's rows of the cache;
  2. for each active reply, in the order generate_bytes does it: leave if should_stop()
     ("cancelled"), else sample a byte from its pending logits, emit it, leave on a stop
     string ("stop") or at max_new_tokens ("length"), re-prefill alone when its window
     is full, else queue the byte for the forward pass;
  3. runs ONE forward pass (BatchDecoder.step) for all queued bytes, each at its own
     position, giving every reply its next logits.

How each row stays exact (bit for bit what it gets decoding alone): bytechat.serve.batch_decoder.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from typing import Callable, Mapping

import torch

from bytechat.text.chat_format import STOP_TAGS, format_chat
from bytechat.serve.generate import (
    GREEDY_BELOW,
    ChatEngine,
    NonFiniteLogits,
    ReplyAssembler,
    ReplyDone,
    ReplyEvent,
    RepeatGuard,
    SamplingConfig,
    candidates,
    crop_messages,
    sample_next,
)
from bytechat.serve.batch_decoder import BatchDecoder
from bytechat.core.rng import make_generator

log = logging.getLogger("bytechat.batch")
DEFAULT_MAX_BATCH = 16
_STOPS = tuple(tag.encode("utf-8") for tag in STOP_TAGS)


EventSink = Callable[[object], None]  # receives ReplyEvent, then ReplyDone, or an Exception


class BatchRequest:
    """One reply in the batch: its window, sampling, generator and stop state."""

    def __init__(
        self,
        prompt: bytes,
        sampling: SamplingConfig,
        generator: torch.Generator,
        block_size: int,
        emit: EventSink,
        should_stop: Callable[[], bool] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> None:
        if not prompt:
            raise ValueError("BatchRequest: prompt must not be empty (the model needs a byte to condition on)")
        self.sampling, self.generator = sampling, generator
        self.emit, self.should_stop, self.on_start = emit, should_stop, on_start
        self.text = bytearray(prompt[-block_size:])  # what the model currently sees
        self.produced = bytearray()
        self.guard = RepeatGuard(sampling.repeat_guard)
        self.assembler = ReplyAssembler()
        self.slot: int | None = None
        self.logits: torch.Tensor | None = None
        self.started = 0.0
        self.finish_reason: str | None = None

    def record(self, byte: int) -> None:
        """The sampled byte: into the reply, the repeat guard and the window; emit its text."""
        self.produced.append(byte)
        self.guard.add(self.produced)
        self.text.append(byte)
        piece = self.assembler.feed(byte)
        if piece:
            self.emit(ReplyEvent(piece))

    def finish(self, reason: str) -> None:
        self.finish_reason = reason
        tail = self.assembler.finish()
        if tail:
            self.emit(ReplyEvent(tail))
        seconds = time.perf_counter() - self.started if self.started else 0.0
        self.emit(ReplyDone(self.assembler.reply, reason, len(self.produced), seconds))


class BatchEngine:
    """Replies to chat message lists in a shared batch; submit() from any thread.

    Drive it with step() (tests do), or start() a thread that steps while there is work.
    Events reach each request's emit callback from the stepping thread: ReplyEvent
    pieces, then one ReplyDone; an exception while decoding is passed to emit instead
    (as the last event) for every reply it touched, and the engine goes on.
    """

    def __init__(self, engine: ChatEngine, max_batch_size: int = DEFAULT_MAX_BATCH) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        self.decoder = BatchDecoder(engine.model, max_batch_size)
        self.block_size = engine.block_size
        self._keep = max(1, self.block_size // 2)
        self._lock = threading.Condition()
        self._waiting: deque[BatchRequest] = deque()
        self._active: list[BatchRequest] = []
        self._free = list(range(max_batch_size - 1, -1, -1))
        self._thread: threading.Thread | None = None
        self._closed = False
        # Called by the stepping thread after each step (and after the last events at
        # close): a caller that buffers events can hand them on together, once per step.
        self.after_step: Callable[[], None] | None = None

    # ---- any thread

    def submit(
        self,
        messages: list[Mapping[str, str]],
        sampling: SamplingConfig,
        seed: int | None,
        emit: EventSink,
        should_stop: Callable[[], bool] | None = None,
        on_start: Callable[[], None] | None = None,
    ) -> BatchRequest:
        """Queue a reply; it joins the batch at the next step with a free slot. Bad
        messages raise ChatFormatError here, as ChatEngine.stream_reply does."""
        if not isinstance(sampling, SamplingConfig):
            raise TypeError("submit: sampling must be a SamplingConfig")
        prompt = prompt_bytes(self.engine, messages)
        generator = make_generator(seed if seed is not None else secrets.randbits(63))
        request = BatchRequest(prompt, sampling, generator, self.block_size, emit, should_stop, on_start)
        with self._lock:
            if self._closed:
                raise RuntimeError("BatchEngine: closed")
            self._waiting.append(request)
            self._lock.notify()
        return request

    def withdraw(self, request: BatchRequest) -> bool:
        """Take a request that has not joined the batch out of the line; False if it has."""
        with self._lock:
            try:
                self._waiting.remove(request)
            except ValueError:
                return False
            return True

    def load(self) -> dict[str, int]:
        with self._lock:
            return {"running": len(self._active), "waiting": len(self._waiting)}

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="bytechat-batch", daemon=True)
                self._thread.start()

    def close(self) -> None:
        """Stop after the current step; replies still waiting or running end "cancelled"."""
        with self._lock:
            self._closed = True
            self._lock.notify_all()
            thread = self._thread
        if thread is None:
            self._cancel_all()
            if self.after_step is not None:
                self.after_step()
        elif thread is not threading.current_thread():
            thread.join(10)

    # ---- the stepping thread

    @torch.inference_mode()
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._waiting and not self._active:
                    self._lock.wait()
                if self._closed:
                    break
            try:
                self._step()
            except Exception as exc:  # a bug, not a model error (those fail their replies only)
                log.exception("batch step failed; failing the replies in the batch")
                self._fail(list(self._active), exc)
            if self.after_step is not None:
                self.after_step()
        self._cancel_all()
        if self.after_step is not None:
            self.after_step()

    def _cancel_all(self) -> None:
        """On close: every reply still waiting or in the batch ends as "cancelled"."""
        with self._lock:
            left = list(self._waiting) + list(self._active)
            self._waiting.clear()
        for request in left:
            self._leave(request, "cancelled")

    def step(self) -> bool:
        """Admit waiting requests, then advance every active reply by one byte (the body
        of generate_bytes' loop, for all of them). Returns whether any reply is still
        active or waiting."""
        with torch.inference_mode():
            return self._step()

    def _step(self) -> bool:
        self._admit()
        rows = []
        for request in list(self._active):
            if request.should_stop is not None and request.should_stop():
                self._leave(request, "cancelled")
            else:
                rows.append(request)
        feed: list[BatchRequest] = []
        try:
            picked = sample_rows(rows)
        except Exception:  # one bad row must not stop the others: retry them one by one
            picked = [_guarded(sample_rows, [request]) for request in rows]
        for request, byte in zip(rows, picked):
            try:
                if isinstance(byte, Exception):
                    raise byte
                if self._advance(request, byte):
                    feed.append(request)
            except Exception as exc:  # this reply only (e.g. non-finite logits)
                self._fail([request], exc)
        if feed:
            try:
                logits = self.decoder.step([r.slot for r in feed], [r.text[-1] for r in feed])
                for request, row in zip(feed, logits):
                    request.logits = row
            except Exception as exc:  # the whole step: every reply in it
                self._fail(feed, exc)
        with self._lock:
            return bool(self._active or self._waiting)

    def _admit(self) -> None:
        while self._waiting:  # (read without the lock: a request added now joins next step)
            with self._lock:
                if not self._waiting or not self._free:
                    return
                request = self._waiting.popleft()
                request.slot = self._free.pop()
                self._active.append(request)
            request.started = time.perf_counter()
            if request.on_start is not None:
                request.on_start()
            try:
                request.logits = self.decoder.prefill(request.slot, request.text)
            except Exception as exc:
                self._fail([request], exc)

    def _advance(self, request: BatchRequest, byte: int) -> bool:
        """Record byte and see what comes next; True if the reply needs a forward pass."""
        request.record(byte)
        produced = request.produced
        if produced.endswith(_STOPS):
            self._leave(request, "stop")
            return False
        if len(produced) == request.sampling.max_new_tokens:
            self._leave(request, "length")
            return False
        if self.decoder.full(request.slot):  # the window is full: re-prefill its second half
            del request.text[: -self._keep]
            request.logits = self.decoder.prefill(request.slot, request.text)
            return False
        return True

    def _release(self, request: BatchRequest) -> None:
        with self._lock:
            if request in self._active:
                self._active.remove(request)
                self._free.append(request.slot)
                self._lock.notify_all()

    def _leave(self, request: BatchRequest, reason: str) -> None:
        self._release(request)
        request.finish(reason)

    def _fail(self, requests: list[BatchRequest], exc: Exception) -> None:
        for request in requests:
            self._release(request)
            request.emit(exc)


def sample_rows(requests: list[BatchRequest]) -> list[int | Exception]:
    """Each request's next byte from its pending logits, exactly as sample_next draws it
    alone (the repeat guard's bans applied first, as generate_bytes does): rows that
    share sampling settings go through each step of sample_next together (every step is
    row by row: bitwise the same values), and each row draws from its own generator.
    A row with non-finite logits gets a NonFiniteLogits in place of its byte."""
    if len(requests) == 1:
        return [_sample_one(requests[0])]
    out: list[int | Exception] = [0] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, request in enumerate(requests):
        sp = request.sampling
        greedy = sp.temperature < GREEDY_BELOW
        key = (
            (greedy, request.generator.device)
            if greedy
            else (sp.temperature, sp.top_k, sp.top_p, request.generator.device)
        )
        groups.setdefault(key, []).append(i)
    for key, members in groups.items():
        if len(members) == 1:
            out[members[0]] = _sample_one(requests[members[0]])
            continue
        logits = torch.stack([requests[i].logits for i in members])
        for row, i in enumerate(members):
            banned = requests[i].guard.banned(requests[i].produced)
            if banned:  # far below the rest (finite: sample_next refuses inf), so never drawn
                logits[row, banned] = logits[row].min() - 1e4
        logits = logits.to(key[-1], torch.float32)
        finite = torch.isfinite(logits).all(dim=-1).tolist()
        if not all(finite):
            for row, i in enumerate(members):
                if not finite[row]:
                    out[i] = NonFiniteLogits(
                        "sample_next: the model produced non-finite logits (nan or inf); the weights are broken"
                    )
            keep = [row for row, ok in enumerate(finite) if ok]
            if not keep:
                continue
            members, logits = [members[row] for row in keep], logits[keep]
        if key[0] is True:
            for i, byte in zip(members, logits.argmax(dim=-1).tolist()):
                out[i] = byte
            continue
        probs, ids = candidates(logits, requests[members[0]].sampling)
        for row, i in enumerate(members):
            choice = torch.multinomial(probs[row : row + 1], 1, generator=requests[i].generator)
            out[i] = int(ids[row, choice])
    return out


def _guarded(sample, requests: list[BatchRequest]) -> int | Exception:
    try:
        return sample(requests)[0]
    except Exception as exc:
        return exc


def _sample_one(request: BatchRequest) -> int | Exception:
    """sample_next itself, after the repeat guard's bans (generate_bytes' lines)."""
    logits, banned = request.logits, request.guard.banned(request.produced)
    if banned:  # far below the rest (finite: sample_next refuses inf), so never drawn
        logits = logits.clone()
        logits[banned] = logits.min() - 1e4
    try:
        return int(sample_next(logits, request.sampling, request.generator))
    except NonFiniteLogits as exc:
        return exc


def prompt_bytes(engine: ChatEngine, messages: list[Mapping[str, str]]) -> bytes:
    """The prompt ChatEngine.stream_reply builds for messages (cropped to its budget)."""
    return format_chat(crop_messages(messages, engine.prompt_budget)).encode("utf-8")

"""Continuous batching: many replies decoded together, one forward pass per byte for all.

A small model's batch-1 decoding step is almost all fixed cost (dispatching ~150 tiny
ops, reading every weight once), so one step for sixteen replies costs little more than
a step for one. BatchEngine keeps the replies in the first rows of one shared KV cache
(BatchDecoder), each row at its own length, each reply with its own sampling settings,
torch.Generator, repeat guard, stop strings and ReplyAssembler. Every step():

  1. admits waiting requests into free rows: each prompt is prefilled alone into its
     row (generate.prefill, as generate_bytes does);
  2. for each active reply, in the order generate_bytes does it: leave if should_stop()
     ("cancelled"), else take its byte (one sample_rows call for all rows), emit it,
     leave on a stop string ("stop") or at max_new_bytes ("length"), refill its row
     when the row is full (generate.refill);
  3. runs ONE GPT.forward for the rows still active (kept packed at the front of the
     cache), each row at its own length, giving every reply its next log-probabilities.

Decoding alone and in a batch run the same forward, sampler, prefill and refill; rows at
different lengths are padded and masked, which moves log-probabilities in the last bits
only (within 1e-4 in fp32, tests/test_batch_engine.py), so greedy replies are the same
bytes and seeded ones the same draws unless a draw falls within that of a boundary.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections import deque
from typing import Callable, Mapping

import torch

from bytechat.core.rng import make_generator
from bytechat.model import GPT
from bytechat.model.compiled import DecodeStep, batch_sizes, bucket, start_line
from bytechat.serve.copying import copy_guard, restrict
from bytechat.serve.span_answer import answer_span
from bytechat.serve.generate import (
    ChatEngine,
    ReplyAssembler,
    ReplyDone,
    ReplyEvent,
    crop_messages,
    prefill,
    refill,
)
from bytechat.serve.sampling import Draw, RepeatGuard, SamplingConfig, sample_rows
from bytechat.text.chat_format import STOP_TAGS, format_chat

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
        answer_style: str | None = None,
        abstain_margin: float | None = None,
        span: str | None = None,
    ) -> None:
        if not prompt:
            raise ValueError("BatchRequest: prompt must not be empty (the model needs a byte to condition on)")
        self.sampling, self.generator = sampling, generator
        self.emit, self.should_stop, self.on_start = emit, should_stop, on_start
        self.text = bytearray(prompt[-block_size:])  # what the model currently sees
        self.produced = bytearray()
        self.guard = RepeatGuard(sampling.repeat_guard)
        room = sampling.max_new_bytes
        # None unless faithful; span: a fact question's answer, pointed at (span_answer.py)
        self.copy = copy_guard(prompt, sampling.faithful, answer_style, room, abstain_margin, span)
        self.assembler = ReplyAssembler()
        self.row: int | None = None  # its row of the cache while in the batch (rows move as others leave)
        self.log_probs: torch.Tensor | None = None  # of its next byte, (256,)
        self.started = 0.0
        self.finish_reason: str | None = None

    def draw(self) -> Draw:
        return Draw(self.sampling, self.generator, *restrict(self.copy, self.guard, self.produced))

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


class BatchDecoder:
    """The model side: one KVCache whose first n rows hold the batch's sequences.

    Rows stay packed (a row that leaves is filled with the last one, move()), so a step
    is GPT.forward on the cache's first n rows: a view, nothing copied. With a DecodeStep
    (compiled) a step runs on the first bucket(n) rows instead, static shapes, the rows
    past n fed a dummy byte and emptied again (they are free). Call it under
    torch.inference_mode() (BatchEngine does, once per thread).
    """

    def __init__(self, model: GPT, max_batch: int, step: DecodeStep | None = None) -> None:
        if max_batch < 1:
            raise ValueError(f"BatchDecoder: max_batch must be >= 1 (got {max_batch})")
        self.model, self.max_batch, self.step_fn = model, max_batch, step
        self.device = model.wte.weight.device
        self.block_size = model.config.block_size
        self.cache = model.new_cache(max_batch)
        # Views made once: the first n rows (a step), and each row alone (a prefill).
        self._first = [self.cache.rows(0, n) for n in range(max_batch + 1)]
        self._row = [self.cache.rows(row, row + 1) for row in range(max_batch)]
        self.sizes = batch_sizes(max_batch)
        self._static = {}
        for size in self.sizes:  # the compiled step's views: the same rows, static shapes
            self._static[size] = self.cache.rows(0, size)
            self._static[size].static = True
        self._idx = torch.zeros((max_batch, 1), dtype=torch.long, device=self.device)

    def prefill(self, row: int, window: bytes | bytearray) -> torch.Tensor:
        """Run window (from position 0) alone into row; its last position's log-probabilities (256,)."""
        return prefill(self.model, window, self._row[row], self.device)

    def refill(self, row: int, window: bytearray, keep: int) -> None:
        """The row is full: generate.refill on it (the window's newest byte is left for step())."""
        refill(self.model, window, self._row[row], keep, self.device)

    def full(self, row: int) -> bool:
        return int(self.cache.lengths[row]) >= self.block_size

    def move(self, src: int, dst: int) -> None:
        self.cache.move_row(src, dst)

    def warm_up(self) -> float:
        """Compile the step for every batch size now, on this cache (emptied after); seconds."""
        if self.step_fn is None:
            return 0.0
        with torch.inference_mode():  # as the stepping thread runs
            seconds = self.step_fn.warm_up(self.sizes, run=lambda size: self.step([0] * size))
            self.cache.lengths.zero_()
        return seconds

    def step(self, byte_values: list[int]) -> torch.Tensor:
        """Feed byte_values[r] to row r (rows 0..n-1, each at its own length); the next
        log-probabilities (n, 256)."""
        n = len(byte_values)
        if self.step_fn is None:
            idx = torch.tensor(byte_values, dtype=torch.long, device=self.device).view(n, 1)
            return self.model(idx, cache=self._first[n])[0][:, -1]
        size = bucket(n, self.sizes)
        self.cache.lengths[n:size] = 0  # free rows: whatever they held is never read again
        idx = self._idx[:size]
        idx[:n, 0] = torch.tensor(byte_values, dtype=torch.long)
        out = self.step_fn(idx, self._static[size])[:n]
        self.cache.lengths[n:size] = 0
        return out


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
        self.decoder = BatchDecoder(engine.model, max_batch_size, engine.step)
        self.block_size = engine.block_size
        self._keep = max(1, self.block_size // 2)
        self._lock = threading.Condition()
        self._waiting: deque[BatchRequest] = deque()
        self._active: list[BatchRequest] = []  # in row order: _active[r].row == r
        self._thread: threading.Thread | None = None
        self._closed = False
        # Called by the stepping thread after each step (and after the last events at
        # close): a caller that buffers events can hand them on together, once per step.
        self.after_step: Callable[[], None] | None = None

    def warm_up(self) -> str:
        """Compile the decode step for the batch's sizes (before the first request); the
        start-up line (see ChatEngine.warm_up)."""
        return start_line(self.decoder.step_fn, self.decoder.warm_up(), self.decoder.sizes)

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
        """Queue a reply; it joins the batch at the next step with a free row. Bad
        messages raise ChatFormatError here, as ChatEngine.stream_reply does."""
        if not isinstance(sampling, SamplingConfig):
            raise TypeError("submit: sampling must be a SamplingConfig")
        prompt = prompt_bytes(self.engine, messages)
        generator = make_generator(seed if seed is not None else secrets.randbits(63))
        request = BatchRequest(
            prompt,
            sampling,
            generator,
            self.block_size,
            emit,
            should_stop,
            on_start,
            self.engine.answer_style,
            self.engine.abstain_margin,
            answer_span(self.engine.model, prompt) if sampling.faithful else None,
        )
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
        picked = self._sample(rows)
        for request, byte in zip(rows, picked):
            try:
                if isinstance(byte, Exception):
                    raise byte
                self._advance(request, byte)
            except Exception as exc:  # this reply only (e.g. non-finite log-probabilities)
                self._fail([request], exc)
        feed = list(self._active)
        if feed:
            try:
                out = self.decoder.step([request.text[-1] for request in feed])
                for request in feed:
                    request.log_probs = out[request.row]
            except Exception as exc:  # the whole step: every reply in it
                self._fail(feed, exc)
        with self._lock:
            return bool(self._active or self._waiting)

    @staticmethod
    def _sample(rows: list[BatchRequest]) -> list[int | Exception]:
        """Every row's byte in one sample_rows call; should that raise (not a row's bad
        log-probabilities: those come back as that row's error), row by row, so one bad
        row does not stop the others."""
        if not rows:
            return []
        try:
            return sample_rows(torch.stack([r.log_probs for r in rows]), [r.draw() for r in rows])
        except Exception:
            picked: list[int | Exception] = []
            for r in rows:
                try:
                    picked.append(sample_rows(r.log_probs.unsqueeze(0), [r.draw()])[0])
                except Exception as exc:
                    picked.append(exc)
            return picked

    def _admit(self) -> None:
        while self._waiting:  # (read without the lock: a request added now joins next step)
            with self._lock:
                if not self._waiting or len(self._active) == self.max_batch_size:
                    return
                request = self._waiting.popleft()
                request.row = len(self._active)
                self._active.append(request)
            request.started = time.perf_counter()
            if request.on_start is not None:
                request.on_start()
            try:
                request.log_probs = self.decoder.prefill(request.row, request.text)
            except Exception as exc:
                self._fail([request], exc)

    def _advance(self, request: BatchRequest, byte: int) -> None:
        """Record byte and see what comes next: leave, or stay (refilled if its row is full)."""
        request.record(byte)
        produced = request.produced
        if produced.endswith(_STOPS):
            self._leave(request, "stop")
        elif len(produced) == request.sampling.max_new_bytes:
            self._leave(request, "length")
        elif self.decoder.full(request.row):
            self.decoder.refill(request.row, request.text, self._keep)

    def _release(self, request: BatchRequest) -> None:
        """Out of the batch; the last row moves into its row, so the rows stay packed."""
        with self._lock:
            if request not in self._active:
                return
            last = self._active.pop()
            if last is not request:
                self.decoder.move(last.row, request.row)
                last.row = request.row
                self._active[request.row] = last
            self._lock.notify_all()

    def _leave(self, request: BatchRequest, reason: str) -> None:
        self._release(request)
        request.finish(reason)

    def _fail(self, requests: list[BatchRequest], exc: Exception) -> None:
        for request in requests:
            self._release(request)
            request.emit(exc)


def prompt_bytes(engine: ChatEngine, messages: list[Mapping[str, str]]) -> bytes:
    """The prompt ChatEngine.stream_reply builds for messages (cropped to its budget)."""
    return format_chat(crop_messages(messages, engine.prompt_budget)).encode("utf-8")

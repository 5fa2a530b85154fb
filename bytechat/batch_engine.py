"""Continuous batching: many replies decoded together, one forward pass per byte for all.

A small model's batch-1 decoding step is almost all fixed cost (dispatching ~150 tiny
ops, reading every weight once), so sixteen replies decoded one by one take sixteen
times as long as one, where one batched step for all sixteen costs little more than a
single one. BatchEngine keeps a batch of active replies, each in its own rows of one
shared KV cache (slot), with its own position, sampling settings, torch.Generator,
repeat guard, stop strings and ReplyAssembler. Every step():

  1. admits waiting requests into free slots: each prompt is prefilled alone (batch 1,
     exactly as generate_bytes prefills it) and its cache rows copied into its slot;
  2. for each active reply, in the order generate_bytes does it: leave if should_stop()
     ("cancelled"), else sample a byte from its pending logits, emit it, leave on a stop
     string ("stop") or at max_new_tokens ("length"), re-prefill alone when its window
     is full, else queue the byte for the forward pass;
  3. runs ONE forward pass (BatchDecoder.step) for all queued bytes, each at its own
     position, giving every reply its next logits.

Exactness. Every reply gets the bytes it would get decoding alone with the same seed
(fp32, bit for bit; tests/test_batch_engine.py). Padding rows to one length does not
give that on the CPU: a batched matmul (GEMM) sums in another order than batch 1's
matrix-vector kernel, and SDPA with a padding mask blocks the keys differently, so
logits moved in the last bits (1e-7 .. 4e-5) and, now and then, a sampled byte with
them. So the step computes each row with the same kernels batch 1 uses:

  - every Linear as torch.bmm against the weight broadcast over the batch: a batch of
    one-row products, bitwise equal to F.linear on one row (checked for both weight
    layouts), at ~2.5x the time of one row instead of 16x;
  - LayerNorm, GELU, RoPE, residual adds, log-softmax and the short convolution are
    row-independent and run batched;
  - attention and the copy head's pointer attention, the only parts whose size depends
    on a row's length, run per row over exactly that row's cache (SDPA over its own
    length, no mask), as batch 1 does.

bf16 weights go through the same per-row kernels, so the same argument holds; it is
tested in fp32 only (the CPU server runs fp32).
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections import deque
from typing import Callable, Mapping

import torch
import torch.nn.functional as F

from bytechat.chat_format import STOP_TAGS, format_chat
from bytechat.generate import (
    GREEDY_BELOW,
    ChatEngine,
    NonFiniteLogits,
    ReplyAssembler,
    ReplyDone,
    ReplyEvent,
    RepeatGuard,
    SamplingConfig,
    _last_logits,
    crop_messages,
)
from bytechat.model import GPT
from bytechat.model.copy_head import _TINY
from bytechat.model.rope import rotate
from bytechat.rng import make_generator

DEFAULT_MAX_BATCH = 16
_STOPS = tuple(tag.encode("utf-8") for tag in STOP_TAGS)


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(x, weight) for x (R, 1, in), each row bitwise what F.linear gives it alone."""
    return torch.bmm(x, weight.t().unsqueeze(0).expand(x.shape[0], -1, -1))


class BatchDecoder:
    """The model side: a KV cache with max_batch slots and one batched decoding step.

    A slot holds one sequence: its keys/values, short-conv inputs and copy-head keys and
    ids (KVCache's rows), and its length. Slots are independent: a sequence of any
    length may sit next to any other.
    """

    def __init__(self, model: GPT, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"BatchDecoder: max_batch must be >= 1 (got {max_batch})")
        self.model = model
        self.config = cfg = model.config
        self.device = model.wte.weight.device
        self.max_batch = max_batch
        self.cache = model.new_cache(max_batch)
        self._prefill_cache = model.new_cache(1)
        self.lengths = [0] * max_batch
        self._conv_offsets = torch.arange(-(cfg.conv_kernel - 1), 1, device=self.device) if cfg.conv_kernel > 1 else None
        # The copy head's "byte after position j" as one-hot rows, kept per slot so a step
        # does not rebuild them (F.one_hot of the whole context per row and byte).
        self._following = None
        if model.copy is not None:
            self._following = torch.zeros((max_batch, cfg.block_size, cfg.vocab_size), device=self.device)

    @torch.inference_mode()
    def prefill(self, slot: int, window: bytes | bytearray) -> torch.Tensor:
        """Run window (from position 0) alone into slot; the last position's logits (256,)."""
        cache, one = self.cache, self._prefill_cache
        logits = _last_logits(self.model, window, one, self.device)  # exactly generate_bytes' prefill
        n = len(window)
        cache.data[:, :, slot, :, :n] = one.data[:, :, 0, :, :n]
        for layer, rows in zip(cache.conv, one.conv):
            if layer is not None:
                layer[slot, :n] = rows[0, :n]
        if cache.copy_keys is not None:
            cache.copy_keys[slot, :n] = one.copy_keys[0, :n]
            cache.copy_ids[slot, :n] = one.copy_ids[0, :n]
            following = self._following[slot]
            following.zero_()
            if n > 1:
                following[: n - 1] = F.one_hot(one.copy_ids[0, 1:n], self.config.vocab_size).float()
        self.lengths[slot] = n
        return logits

    def full(self, slot: int) -> bool:
        return self.lengths[slot] >= self.config.block_size

    @torch.inference_mode()
    def step(self, slots: list[int], byte_values: list[int]) -> torch.Tensor:
        """Feed byte_values[r] to slots[r] at that slot's next position; logits (R, 256)."""
        model, cache, cfg, device = self.model, self.cache, self.config, self.device
        R, H, D, C = len(slots), cfg.n_head, cfg.head_dim, cfg.n_embd
        pos_list = [self.lengths[s] for s in slots]
        if max(pos_list) >= cfg.block_size:
            raise ValueError("BatchDecoder.step: a slot is full (re-prefill it first)")
        slot_t = torch.tensor(slots, device=device)
        pos_t = torch.tensor(pos_list, device=device)
        idx = torch.tensor(byte_values, dtype=torch.long, device=device).view(R, 1)
        sin = model.rope_sin[pos_t].view(R, 1, 1, D)
        cos = model.rope_cos[pos_t].view(R, 1, 1, D)
        x = model.wte(idx)
        at = slot_t * cfg.block_size + pos_t  # each row's new position in a (slots * block, ...) view
        window_at = before_start = None
        if self._conv_offsets is not None:  # the short convolution's window: the last kernel positions
            where = pos_t.unsqueeze(1) + self._conv_offsets  # (R, kernel); < 0: before the start
            window_at = (slot_t.unsqueeze(1) * cfg.block_size + where.clamp_min(0)).flatten()
            before_start = (where < 0).unsqueeze(-1) if bool((where < 0).any()) else None
        for i, block in enumerate(model.blocks):
            h = block.ln_1(x)
            if block.conv is not None:
                h = self._conv(block.conv, h, cache.conv[i], at, window_at, before_start)
            qkv = _linear(h, block.attn.qkv.weight).view(R, 1, 3, H, D).permute(2, 0, 3, 1, 4)
            qk = rotate(qkv[:2], sin, cos)
            q, k, v = qk[0], qk[1], qkv[2]  # (R, H, 1, D)
            keys, values = cache.layers[i]
            keys[slot_t, :, pos_t] = k[:, :, 0]
            values[slot_t, :, pos_t] = v[:, :, 0]
            y = torch.cat([
                F.scaled_dot_product_attention(q[r : r + 1], keys[s : s + 1, :, : p + 1], values[s : s + 1, :, : p + 1])
                for r, (s, p) in enumerate(zip(slots, pos_list))
            ])  # fmt: skip
            x = x + _linear(y.transpose(1, 2).reshape(R, 1, C), block.attn.proj.weight)
            mlp = block.mlp
            x = x + _linear(F.gelu(_linear(block.ln_2(x), mlp.fc.weight), approximate="tanh"), mlp.proj.weight)
        h = model.ln_f(x)
        logits = _linear(h, model.wte.weight)
        if model.copy is not None:
            logits = self._copy(h, logits, idx, at, slots, pos_list)
        for s, p in zip(slots, pos_list):
            self.lengths[s] = p + 1
        return logits[:, 0]

    @staticmethod
    def _conv(conv, h: torch.Tensor, buf: torch.Tensor, at, window_at, before_start) -> torch.Tensor:
        """ShortConv.forward for one new position per row, over each row's own last inputs
        (zeros before position 0, as its padding gives)."""
        R, _, C = h.shape
        flat = buf.view(-1, C)
        flat.index_copy_(0, at, h[:, 0])
        window = flat.index_select(0, window_at).view(R, -1, C)  # (R, kernel, C)
        if before_start is not None:
            window = window.masked_fill(before_start, 0.0)
        mixed = F.conv1d(window.transpose(1, 2).contiguous(), conv.weight.to(h.dtype), groups=C)
        return h + mixed[..., -1:].transpose(1, 2)

    def _copy(self, h, logits, idx, at, slots: list[int], pos_list: list[int]) -> torch.Tensor:
        """CopyHead.forward for one new position per row: the pointer attention (and the
        gate, whose bias makes batch 1 sum in its own order) per row over that row's own
        context; the rest batched."""
        copy, cache, cfg = self.model.copy, self.cache, self.config
        keys, ids, following = cache.copy_keys, cache.copy_ids, self._following
        keys.view(-1, keys.shape[-1]).index_copy_(0, at, _linear(h, copy.key.weight)[:, 0].to(keys.dtype))
        ids.view(-1).index_copy_(0, at, idx[:, 0])
        # The byte just fed is what follows the row's previous position (every step is at position >= 1).
        following.view(-1, cfg.vocab_size).index_copy_(0, at - 1, F.one_hot(idx[:, 0], cfg.vocab_size).float())
        q = _linear(h, copy.query.weight).float()
        scale = math.sqrt(copy.dim)
        null = copy.null_score.float().expand(1, 1, 1)
        gate_w, gate_b = copy.gate.weight, copy.gate.bias
        p_copy, null_attn, gates = [], [], []
        for r, (s, p) in enumerate(zip(slots, pos_list)):
            end = p + 1
            scores = q[r : r + 1] @ keys[s : s + 1, :end].float().transpose(1, 2) / scale
            scores[..., p] = float("-inf")  # a query may not use its own position (j < t)
            attn = torch.cat((scores, null), dim=-1).softmax(dim=-1)
            p_copy.append(attn[..., :-1] @ following[s : s + 1, :end])
            null_attn.append(attn[..., -1:])
            gates.append(F.linear(h[r : r + 1], gate_w, gate_b))
        gate = torch.sigmoid(torch.cat(gates).float())
        keep_model = (1 - gate * (1 - torch.cat(null_attn))).clamp_min(_TINY)
        log_model = F.log_softmax(logits.float(), dim=-1)
        return torch.logaddexp(log_model + keep_model.log(), (gate * torch.cat(p_copy)).clamp_min(_TINY).log())


EventSink = Callable[[object], None]  # receives ReplyEvent, then ReplyDone, or an Exception


class BatchRequest:
    """One reply in the batch: its window, sampling, generator and stop state."""

    def __init__(self, prompt: bytes, sampling: SamplingConfig, generator: torch.Generator, block_size: int,
                 emit: EventSink, should_stop: Callable[[], bool] | None = None,
                 on_start: Callable[[], None] | None = None) -> None:  # fmt: skip
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

    # ---- any thread

    def submit(self, messages: list[Mapping[str, str]], sampling: SamplingConfig, seed: int | None, emit: EventSink,
               should_stop: Callable[[], bool] | None = None,
               on_start: Callable[[], None] | None = None) -> BatchRequest:  # fmt: skip
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
        elif thread is not threading.current_thread():
            thread.join(10)

    # ---- the stepping thread

    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._closed and not self._waiting and not self._active:
                    self._lock.wait()
                if self._closed:
                    break
            self.step()
        self._cancel_all()

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
        self._admit()
        rows = []
        for request in list(self._active):
            if request.should_stop is not None and request.should_stop():
                self._leave(request, "cancelled")
            else:
                rows.append(request)
        feed: list[BatchRequest] = []
        for request, byte in zip(rows, sample_rows(rows)):
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
        while True:
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
    out: list[int | Exception] = [0] * len(requests)
    groups: dict[tuple, list[int]] = {}
    for i, request in enumerate(requests):
        sp = request.sampling
        greedy = sp.temperature < GREEDY_BELOW
        key = (greedy, request.generator.device) if greedy else (sp.temperature, sp.top_k, sp.top_p, request.generator.device)
        groups.setdefault(key, []).append(i)
    for key, members in groups.items():
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
                    out[i] = NonFiniteLogits("sample_next: the model produced non-finite logits (nan or inf); the weights are broken")
            keep = [row for row, ok in enumerate(finite) if ok]
            if not keep:
                continue
            members, logits = [members[row] for row in keep], logits[keep]
        if key[0] is True:
            for i, byte in zip(members, logits.argmax(dim=-1).tolist()):
                out[i] = byte
            continue
        sampling = requests[members[0]].sampling
        if sampling.top_k and sampling.top_k < logits.shape[-1]:
            values, ids = logits.topk(sampling.top_k, dim=-1)
        else:
            values, ids = logits.sort(dim=-1, descending=True)
        probs = ((values - values[..., :1]) / sampling.temperature).softmax(dim=-1)
        if sampling.top_p is not None and sampling.top_p < 1.0:
            drop = (probs.cumsum(dim=-1) - probs) >= sampling.top_p
            drop[..., 0] = False
            probs = probs.masked_fill(drop, 0.0)
        for row, i in enumerate(members):
            choice = torch.multinomial(probs[row : row + 1], 1, generator=requests[i].generator)
            out[i] = int(ids[row, choice])
    return out


def prompt_bytes(engine: ChatEngine, messages: list[Mapping[str, str]]) -> bytes:
    """The prompt ChatEngine.stream_reply builds for messages (cropped to its budget)."""
    return format_chat(crop_messages(messages, engine.prompt_budget)).encode("utf-8")

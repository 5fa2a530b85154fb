"""The model side of continuous batching: a KV cache of slots and one batched decoding
step for rows at different positions (used by bytechat.serve.batch_engine).

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
    length, no mask), as batch 1 does; so does the copy head's gate (a Linear with a
    bias, which batch 1 sums in its own order);
  - a step with one row, and every prefill, is the model's own batch-1 forward on a
    batch-1 view of the slot (_SlotCache): nothing to match, and no slower than alone.

bf16 (a model cast to bfloat16; the server loads fp32) is close, not guaranteed exact:
the bf16 batched matmul kernels need not sum as batch 1's do. Measured on this CPU over
20 steps x 8 rows: the trained smoke model's logits matched bit for bit, a random model
with the short conv and copy head differed by up to 1.0e-3 (logits of size ~1..10, i.e.
within bf16's own rounding, 2^-8 relative); whole replies matched 5 of 5.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from bytechat.serve.generate import _last_logits
from bytechat.model import GPT
from bytechat.model.copy_head import _TINY


def _linear(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """F.linear(x, weight) for x (R, 1, in), each row bitwise what F.linear gives it alone."""
    return torch.bmm(x, weight.t().unsqueeze(0).expand(x.shape[0], -1, -1))


class BatchDecoder:
    """The model side: a KV cache with max_batch slots and one batched decoding step.

    A slot holds one sequence: its keys/values, short-conv inputs and copy-head keys and
    ids (KVCache's rows), and its length. Slots are independent: a sequence of any
    length may sit next to any other. Call it under torch.inference_mode() (BatchEngine
    does, once per thread).
    """

    def __init__(self, model: GPT, max_batch: int) -> None:
        if max_batch < 1:
            raise ValueError(f"BatchDecoder: max_batch must be >= 1 (got {max_batch})")
        self.model = model
        self.config = cfg = model.config
        self.device = model.wte.weight.device
        self.max_batch = max_batch
        self.cache = model.new_cache(max_batch)
        self._slots = [_SlotCache(self.cache, slot) for slot in range(max_batch)]
        self.lengths = [0] * max_batch
        self._one = torch.zeros((1, 1), dtype=torch.long, device=self.device)  # reused: the batch-1 step's input
        self._conv_offsets = (
            torch.arange(-(cfg.conv_kernel - 1), 1, device=self.device) if cfg.conv_kernel > 1 else None
        )
        # The copy head's "byte after position j" as one-hot rows, kept per slot so a step
        # does not rebuild them (F.one_hot of the whole context per row and byte).
        self._following = None
        if model.copy is not None:
            self._following = torch.zeros((max_batch, cfg.block_size, cfg.vocab_size), device=self.device)
        self._stale = [cfg.block_size] * max_batch  # per slot: the first out-of-date row of _following

    def prefill(self, slot: int, window: bytes | bytearray) -> torch.Tensor:
        """Run window (from position 0) alone into slot; the last position's logits (256,)."""
        logits = _last_logits(self.model, window, self._slots[slot], self.device)  # exactly generate_bytes' prefill
        n = len(window)
        if self._following is not None:
            following = self._following[slot]
            following.zero_()
            if n > 1:
                following[: n - 1] = F.one_hot(self.cache.copy_ids[slot, 1:n], self.config.vocab_size).float()
            self._stale[slot] = self.config.block_size
        self.lengths[slot] = n
        return logits

    def full(self, slot: int) -> bool:
        return self.lengths[slot] >= self.config.block_size

    def step(self, slots: list[int], byte_values: list[int]) -> torch.Tensor:
        """Feed byte_values[r] to slots[r] at that slot's next position; logits (R, 256)."""
        model, cache, cfg, device = self.model, self.cache, self.config, self.device
        R, H, D, C = len(slots), cfg.n_head, cfg.head_dim, cfg.n_embd
        pos_list = [self.lengths[s] for s in slots]
        if max(pos_list) >= cfg.block_size:
            raise ValueError("BatchDecoder.step: a slot is full (re-prefill it first)")
        if R == 1:  # one reply: the model's own batch-1 forward on its slot
            return self._step_one(slots[0], pos_list[0], byte_values[0])
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
            q, k, v = block.attn.split_heads(_linear(h, block.attn.qkv.weight).view(R, 1, 3, H, D), sin, cos)
            keys, values = cache.layers[i]
            keys[slot_t, :, pos_t] = k[:, :, 0]
            values[slot_t, :, pos_t] = v[:, :, 0]
            rows = [self._slots[s].layers[i] for s in slots]  # (keys, values) of each slot, batch-1 views
            y = torch.cat(
                [
                    F.scaled_dot_product_attention(q_r, k_s[:, :, : p + 1], v_s[:, :, : p + 1])
                    for q_r, (k_s, v_s), p in zip(q.split(1), rows, pos_list)
                ]
            )
            x = x + _linear(y.transpose(1, 2).reshape(R, 1, C), block.attn.proj.weight)
            mlp = block.mlp
            x = x + _linear(mlp.activate(_linear(block.ln_2(x), mlp.fc.weight)), mlp.proj.weight)
        h = model.ln_f(x)
        logits = _linear(h, model.wte.weight)
        if model.copy is not None:
            self._refresh_following(slots)
            logits = self._copy(h, logits, idx, at, slots, pos_list)
        for s, p in zip(slots, pos_list):
            self.lengths[s] = p + 1
        return logits[:, 0]

    def _step_one(self, slot: int, pos: int, byte: int) -> torch.Tensor:
        view = self._slots[slot]
        view.length = pos
        self._one.fill_(byte)
        logits = self.model(self._one, cache=view, start_pos=pos)[0][:, -1]
        if self._following is not None:  # brought up to date when the slot is next in a batched step
            self._stale[slot] = min(self._stale[slot], pos - 1)
        self.lengths[slot] = pos + 1
        return logits

    def _refresh_following(self, slots: list[int]) -> None:
        """Rows of the copy head's one-hot table that batch-1 steps left out of date."""
        for s in slots:
            start = self._stale[s]
            if start < self.lengths[s]:
                ids = self.cache.copy_ids[s, start + 1 : self.lengths[s]]
                self._following[s, start : start + len(ids)] = F.one_hot(ids, self.config.vocab_size).float()
                self._stale[s] = self.config.block_size

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
        # The query may not use its own position (j < t: -inf there), then the null slot.
        tail = torch.cat(
            (torch.full((1, 1, 1), float("-inf"), device=q.device), copy.null_score.float().expand(1, 1, 1)), -1
        )
        gate_w, gate_b = copy.gate.weight, copy.gate.bias
        p_copy, null_attn, gates = [], [], []
        go_on = None if copy.go_on is None else copy.go_on.float()
        for q_r, h_r, s, p in zip(q.split(1), h.split(1), slots, pos_list):
            scores = q_r @ keys[s : s + 1, : p + 1].float().transpose(1, 2) / scale  # as batch 1: up to p
            attn = torch.cat((scores[..., :p], tail), dim=-1).softmax(dim=-1)
            if go_on is not None:  # CopyHead._going_on for one position
                attn = self._going_on(go_on, scores[..., :p], tail, attn, cache.copy_prev[s], p)
            p_copy.append(attn[..., :-1] @ following[s : s + 1, : p + 1])
            null_attn.append(attn[..., -1:])
            gates.append(F.linear(h_r, gate_w, gate_b))
        gate = torch.sigmoid(torch.cat(gates).float())
        keep_model = (1 - gate * (1 - torch.cat(null_attn))).clamp_min(_TINY)
        log_model = F.log_softmax(logits.float(), dim=-1)
        return torch.logaddexp(log_model + keep_model.log(), (gate * torch.cat(p_copy)).clamp_min(_TINY).log())

    @staticmethod
    def _going_on(go_on, scores, tail, content, prev: torch.Tensor, p: int) -> torch.Tensor:
        """The going-on bias for position p of one row (prev: that row's copy_prev, go_on
        already a float), element for element what CopyHead._going_on computes for it
        alone. prev needs no zeroing here: its entries past p were zeroed by the prefill
        and are written only as positions grow."""
        shifted = F.pad(prev[: p - 1], (1, 0)).view(1, 1, p)  # a copy, read before prev is rewritten
        prev[: p + 1] = content[0, 0, :-1]
        return torch.cat((scores + go_on * shifted, tail), dim=-1).softmax(dim=-1)


class _SlotCache:
    """One slot of a KVCache, seen as a batch-1 KVCache (views: GPT.forward writes the slot)."""

    def __init__(self, cache, slot: int) -> None:
        rows = slice(slot, slot + 1)
        self.layers = [(keys[rows], values[rows]) for keys, values in cache.layers]
        self.conv = [None if layer is None else layer[rows] for layer in cache.conv]
        self.copy_keys = None if cache.copy_keys is None else cache.copy_keys[rows]
        self.copy_ids = None if cache.copy_ids is None else cache.copy_ids[rows]
        self.copy_prev = None if cache.copy_prev is None else cache.copy_prev[rows]
        self.capacity = cache.capacity
        self.length = 0

    def reset(self) -> None:
        self.length = 0

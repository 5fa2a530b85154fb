"""The KV cache for decoding, and where a forward's new bytes go in it (Span).

One KVCache holds batch_size independent sequences (rows), each with its own length, so
the same GPT.forward decodes one reply or many at once (continuous batching: replies
join and leave between steps, each at its own position). Rows of equal length take the
plain path (slices, no mask); rows of different lengths are padded to the longest and
masked, which changes a row's scores only in the last bits (summation order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from bytechat.core.config import ModelConfig

# One layer's slice of a KVCache: (keys, values), each (B, n_head, block_size, head_dim).
LayerKV = tuple[torch.Tensor, torch.Tensor]


@dataclass
class Span:
    """Where the T new positions of one forward go, for every row.

    pos: (B, T) absolute positions, or (1, T) when every row starts at `start`.
    end: one past the furthest new position: keys 0..end-1 are read.
    start: every row's first new position, or None when the rows' lengths differ.
    causal: SDPA's top-left causal mask is the right one (every row starts at 0).
    mask: otherwise the keys each query may see, (B or 1, 1, T, end) bool; None when a
    single new position per row may see every cached key (start > 0, T == 1).
    """

    pos: torch.Tensor
    end: int
    start: int | None
    causal: bool
    mask: torch.Tensor | None = None

    @staticmethod
    def first(T: int, device: torch.device) -> Span:
        """Positions 0..T-1 of every row (a forward without a cache, or a prefill)."""
        return Span(torch.arange(T, device=device).unsqueeze(0), T, 0, True)


class KVCache:
    """Preallocated keys/values for every layer and row, so decoding allocates nothing per byte.

    `lengths[b]` is how many positions of row b are filled; GPT.forward(idx, cache=c)
    writes row b's T new positions at lengths[b].. and adds T to every row's length.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int = 1, device=None, dtype: torch.dtype = torch.float32) -> None:
        shape = (cfg.n_layer, 2, batch_size, cfg.n_head, cfg.block_size, cfg.head_dim)
        data = torch.zeros(shape, device=device, dtype=dtype)
        self.layers: list[LayerKV] = [(data[i, 0], data[i, 1]) for i in range(cfg.n_layer)]
        # The inputs of each layer's ShortConv (see blocks.ShortConv), when the model has one.
        self.conv: list[torch.Tensor | None] = [None] * cfg.n_layer
        if cfg.conv_kernel > 1:
            conv = torch.zeros((cfg.n_layer, batch_size, cfg.block_size, cfg.n_embd), device=device, dtype=dtype)
            self.conv = [conv[i] for i in range(cfg.n_layer)]
        # The copy head's keys and the input bytes at each position, and the last
        # position's content attention when it goes on where it copied (see copy_head.py).
        self.copy_keys = self.copy_ids = self.copy_prev = None
        if cfg.copy_dim > 0:
            self.copy_keys = torch.zeros((batch_size, cfg.block_size, cfg.copy_dim), device=device, dtype=dtype)
            self.copy_ids = torch.zeros((batch_size, cfg.block_size), device=device, dtype=torch.long)
            if cfg.copy_continue:
                self.copy_prev = torch.zeros((batch_size, cfg.block_size), device=device, dtype=torch.float32)
        self.capacity = cfg.block_size
        self.lengths = torch.zeros(batch_size, dtype=torch.long)  # on the CPU: read by Python every step
        self.device = data.device
        self.static = False  # see span()

    @property
    def length(self) -> int:
        """The longest row's length (with one row: its length)."""
        return int(self.lengths.max())

    def reset(self) -> None:
        self.lengths.zero_()  # stale entries are overwritten or masked before they are ever attended to

    def rows(self, first: int, stop: int) -> KVCache:
        """Rows first..stop-1 as a cache of their own (views: writes reach this cache)."""
        view = object.__new__(KVCache)
        pick = slice(first, stop)
        view.layers = [(keys[pick], values[pick]) for keys, values in self.layers]
        view.conv = [None if layer is None else layer[pick] for layer in self.conv]
        view.copy_keys, view.copy_ids, view.copy_prev = (
            None if t is None else t[pick] for t in (self.copy_keys, self.copy_ids, self.copy_prev)
        )
        view.capacity, view.lengths, view.device = self.capacity, self.lengths[pick], self.device
        view.static = self.static
        return view

    def move_row(self, src: int, dst: int) -> None:
        """Row src's sequence into row dst (the first lengths[src] positions; copy_prev whole)."""
        n = int(self.lengths[src])
        for keys, values in self.layers:
            keys[dst, :, :n] = keys[src, :, :n]
            values[dst, :, :n] = values[src, :, :n]
        for t in [*self.conv, self.copy_keys, self.copy_ids]:
            if t is not None:
                t[dst, :n] = t[src, :n]
        if self.copy_prev is not None:
            self.copy_prev[dst] = self.copy_prev[src]
        self.lengths[dst] = n

    def span(self, T: int) -> Span:
        """Where T new bytes per row go (and check they fit). A `static` cache decoding
        one byte per row attends over all block_size positions, masked, and reads no
        length into Python: every step has the same shapes (for a compiled decode step;
        no bounds check). Its prefills (T > 1, eager) take the usual path."""
        if self.static and T == 1:
            pos = self.lengths.to(self.device).unsqueeze(1) + torch.arange(T, device=self.device)
            mask = torch.arange(self.capacity, device=self.device) <= pos.unsqueeze(-1)
            return Span(pos, self.capacity, None, False, mask.unsqueeze(1))
        lengths = self.lengths.tolist()
        first, last = min(lengths), max(lengths)
        end = last + T
        if end > self.capacity:
            raise ValueError(f"GPT.forward: positions up to {end} exceed block_size {self.capacity}")
        device = self.device
        if first == last:
            pos = torch.arange(first, end, device=device).unsqueeze(0)
            mask = None
            if first > 0 and T > 1:  # bottom-right aligned: query t sees keys up to first + t
                mask = torch.ones(T, end, dtype=torch.bool, device=device).tril(diagonal=first)
            return Span(pos, end, first, first == 0, mask)
        pos = self.lengths.to(device).unsqueeze(1) + torch.arange(T, device=device)  # (B, T)
        mask = torch.arange(end, device=device) <= pos.unsqueeze(-1)  # (B, T, end)
        return Span(pos, end, None, False, mask.unsqueeze(1))

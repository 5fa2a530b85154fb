"""The byte-level GPT: byte embedding -> n_layer pre-norm blocks -> final norm -> the
log-probabilities of the next byte (256 values), the output layer tied to the input
embedding, optionally mixed with a copy head's pointer distribution (copy_head.py); optionally an
extractive answer head (span_head.py) that points at an answer's span in the notes.

GPT.forward is the only forward pass: training, eval, batch-1 decoding and the batched
server all run it (with a KVCache of one row or many, cache.py). Positions come from
RoPE inside attention, so there is no position-embedding table and the state_dict is
just `wte.weight` plus the blocks', the final norm's and the two heads' weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bytechat.core.config import ModelConfig
from bytechat.model.blocks import Block, dropout, norm
from bytechat.model.cache import KVCache, Span
from bytechat.model.copy_head import CopyHead
from bytechat.model.rope import full_width, rope_cache
from bytechat.model.span_head import SpanHead


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = norm(cfg.n_embd)
        self.copy = CopyHead(cfg.n_embd, cfg.copy_dim, cfg.vocab_size, cfg.copy_continue) if cfg.copy_dim > 0 else None
        self.span = SpanHead(cfg.n_embd, cfg.span_dim) if cfg.span_dim > 0 else None
        # Not persistent: derived from the config, so they stay out of checkpoints.
        sin, cos = full_width(*rope_cache(cfg.block_size, cfg.head_dim, cfg.rope_theta, dtype=torch.float32))
        self.register_buffer("rope_sin", sin, persistent=False)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.apply(self._init_weights)

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            std = 0.02
            if getattr(module, "is_residual_projection", False):
                # GPT-2: each block adds two residual branches; scaling keeps the residual
                # stream's variance from growing with depth.
                std /= math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)

    def forward(
        self,
        idx: torch.Tensor,
        targets: torch.Tensor | None = None,
        cache: KVCache | None = None,
        spans: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) byte ids -> (log-probabilities of the next byte (B, T, 256), mean
        cross-entropy against targets or None). targets == -1 are ignored.

        With a cache, row b of idx continues row b of the cache: its bytes go at
        positions cache.lengths[b] .. + T - 1 and see that row's earlier positions;
        every row's length then grows by T. Rows may be at different lengths (continuous
        batching): each is padded to the longest and masked.

        spans (B, 3), with targets and a span head: each row's answer span
        (SpanHead.loss), whose pointer loss joins the loss at config.span_weight.
        """
        h, span = self._states(idx, cache)
        logits = F.linear(h, self.wte.weight)  # tied output layer
        if self.copy is not None:  # log-probabilities that may also copy from the context
            copy_cache = (cache.copy_keys, cache.copy_ids, cache.copy_prev) if cache is not None else ()
            log_probs = self.copy(h, logits, idx, span, *copy_cache)
        else:
            log_probs = F.log_softmax(logits.float(), dim=-1)
        if cache is not None:
            cache.lengths += idx.shape[1]
        loss = None
        if targets is not None:
            # fp32 even under bf16 autocast: log-softmax over 256 classes loses bits in bf16.
            # (Its log-softmax of log-probabilities is the identity up to rounding; the loss
            # is computed as it always was, so training runs give the same figures.)
            loss = F.cross_entropy(log_probs.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
            if spans is not None and self.span is not None:
                loss = loss + self.config.span_weight * self.span.loss(h, spans)
        return log_probs, loss

    @torch.no_grad()
    def span_scores(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The span head's log-probabilities (T,) of each position of idx (1, T) being the
        start and the end of the answer a reply starting after idx's last byte gives."""
        if self.span is None:
            raise ValueError("GPT.span_scores: this model has no span head (span_dim 0)")
        h, _ = self._states(idx, None)
        begin, end = self.span(h, torch.tensor([idx.shape[1] - 1], device=idx.device))
        return begin[0].log_softmax(-1), end[0].log_softmax(-1)

    def _states(self, idx: torch.Tensor, cache: KVCache | None) -> tuple[torch.Tensor, Span]:
        """The final norm's output (B, T, C) for idx, and the positions it sits at."""
        T = idx.shape[1]
        if cache is None:
            if T > self.config.block_size:
                raise ValueError(f"GPT.forward: positions up to {T} exceed block_size {self.config.block_size}")
            span = Span.first(T, idx.device)
        else:
            span = cache.span(T)
        if span.start is not None:
            sin, cos = self.rope_sin[span.start : span.end], self.rope_cos[span.start : span.end]
        else:  # each row at its own positions: (B, 1, T, head_dim), broadcast over heads
            sin, cos = self.rope_sin[span.pos].unsqueeze(1), self.rope_cos[span.pos].unsqueeze(1)
        x = dropout(self.wte(idx), self.config.dropout, self.training)
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x, sin, cos)
            else:
                x = block(x, sin, cos, cache.layers[i], span, cache.conv[i])
        return self.ln_f(x), span

    @torch.no_grad()
    def use_decode_layout(self) -> GPT:
        """Store every Linear weight transposed in memory (same values, same shapes).

        For batch-1 decoding each weight matrix is read once per byte, so speed is memory
        bandwidth, and MKL's GEMV streams an (in, out)-contiguous matrix faster than the
        usual (out, in) one once the weights outgrow the cache (docs/performance.md).
        Meant for inference copies; export writes contiguous tensors either way.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                module.weight.data = module.weight.data.t().contiguous().t()
        return self

    def new_cache(self, batch_size: int = 1) -> KVCache:
        weight = self.wte.weight
        return KVCache(self.config, batch_size, device=weight.device, dtype=weight.dtype)

    @torch.no_grad()
    def attention_maps(self, idx: torch.Tensor) -> list[torch.Tensor]:
        """Per layer, the attention probabilities (B, n_head, T, T), computed explicitly
        (not through the fused kernel) so tests can check causality."""
        T = idx.shape[1]
        sin, cos = self.rope_sin[:T], self.rope_cos[:T]
        x, maps = self.wte(idx), []
        for block in self.blocks:
            maps.append(block.attn.probs(block.attn_input(x), sin, cos))
            x = block(x, sin, cos)
        return maps

    def num_params(self) -> int:
        """Parameters, each counted once (the tied embedding/output matrix is one tensor)."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_byte(self) -> float:
        """Training FLOPs (forward + backward) per byte at full context, for MFU.

        PaLM's estimate (Chowdhury et al. 2022, appendix B): 6N for the matmuls with the N
        parameters (N includes the tied embedding once: the lookup is free, the output
        layer's matmul is not), plus 12 * n_layer * n_embd * block_size for the attention
        scores and the weighted sum of values (no causal halving, as in nanoGPT/PaLM).
        """
        cfg = self.config
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_embd * cfg.block_size

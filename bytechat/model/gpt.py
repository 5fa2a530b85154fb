"""The byte-level GPT: byte embedding -> n_layer pre-norm blocks -> final norm -> logits
over the 256 byte values, with the output layer tied to the input embedding.

Positions come from RoPE inside attention, so there is no position-embedding table and
the state_dict is just `wte.weight` plus the blocks' and final norm's weights.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bytechat.core.config import ModelConfig
from bytechat.model.blocks import Block, LayerKV, dropout, norm
from bytechat.model.copy_head import CopyHead
from bytechat.model.rope import full_width, rope_cache


class KVCache:
    """Preallocated keys/values for every layer, so decoding allocates nothing per byte.

    `length` is how many positions are filled; GPT.forward(..., cache=c, start_pos=p)
    writes positions p..p+T-1 and sets length to p+T.
    """

    def __init__(self, cfg: ModelConfig, batch_size: int = 1, device=None, dtype: torch.dtype = torch.float32) -> None:
        shape = (cfg.n_layer, 2, batch_size, cfg.n_head, cfg.block_size, cfg.head_dim)
        self.data = torch.zeros(shape, device=device, dtype=dtype)
        self.layers: list[LayerKV] = [(self.data[i, 0], self.data[i, 1]) for i in range(cfg.n_layer)]
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
        self.length = 0

    def reset(self) -> None:
        self.length = 0  # stale entries are overwritten before they are ever attended to


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = norm(cfg.n_embd)
        self.copy = CopyHead(cfg.n_embd, cfg.copy_dim, cfg.vocab_size, cfg.copy_continue) if cfg.copy_dim > 0 else None
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
        start_pos: int = 0,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) byte ids -> (logits (B, T, 256), mean cross-entropy or None).

        With a cache, idx holds positions start_pos..start_pos+T-1 of the sequence whose
        earlier positions are already in the cache. targets == -1 are ignored.
        """
        T = idx.shape[1]
        end = start_pos + T
        if end > self.config.block_size:
            raise ValueError(f"GPT.forward: positions up to {end} exceed block_size {self.config.block_size}")
        sin, cos = self.rope_sin[start_pos:end], self.rope_cos[start_pos:end]
        x = dropout(self.wte(idx), self.config.dropout, self.training)
        for i, block in enumerate(self.blocks):
            if cache is None:
                x = block(x, sin, cos)
            else:
                x = block(x, sin, cos, cache.layers[i], start_pos, cache.conv[i])
        h = self.ln_f(x)
        logits = F.linear(h, self.wte.weight)  # tied output layer
        if self.copy is not None:  # log-probabilities that may also copy from the context
            keys, ids, prev = (cache.copy_keys, cache.copy_ids, cache.copy_prev) if cache is not None else (None,) * 3
            logits = self.copy(h, logits, idx, keys, ids, start_pos, prev)
        if cache is not None:
            cache.length = end
        loss = None
        if targets is not None:
            # fp32 even under bf16 autocast: log-softmax over 256 classes loses bits in bf16.
            loss = F.cross_entropy(logits.float().flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    @torch.no_grad()
    def use_decode_layout(self) -> GPT:
        """Store every Linear weight transposed in memory (same values, same shapes).

        For batch-1 decoding each weight matrix is read once per byte, so speed is memory
        bandwidth. MKL's GEMV streams an (in, out)-contiguous matrix ~2x faster than the
        usual (out, in) one once the weights outgrow the cache (6x256 model, 2-core EPYC).
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

"""Rotary position embeddings (RoPE, Su et al. 2021), "rotate half" layout.

Each head vector of size D is split into two halves (x1, x2) that are rotated as D/2
pairs (x1[i], x2[i]) by the angle pos * theta^(-2i/D):

    rope(x) = (x1 cos - x2 sin,  x2 cos + x1 sin)

A rotation by angle a dotted with one by angle b depends only on a - b, so attention
scores see relative positions only. That is what lets the KV cache re-prefill a cropped
window starting at position 0 again.
"""

from __future__ import annotations

import torch


def rope_cache(
    T: int, D: int, theta: float = 10000.0, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) tables of shape (T, D/2) for positions 0..T-1 and head dim D."""
    if D % 2:
        raise ValueError(f"rope_cache: head dim {D} must be even (RoPE rotates pairs of channels)")
    # Angles in fp32 even when the tables are wanted in bf16: bf16 cannot even hold 257.
    inv_freq = theta ** (-torch.arange(0, D, 2, device=device, dtype=torch.float32) / D)
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv_freq)
    dtype = dtype or torch.get_default_dtype()
    return angles.sin().to(dtype), angles.cos().to(dtype)


def full_width(sin: torch.Tensor, cos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The (T, D/2) tables widened to (T, D) for `rotate`: (-sin | sin) and (cos | cos)."""
    return torch.cat((-sin, sin), dim=-1), torch.cat((cos, cos), dim=-1)


def rotate(x: torch.Tensor, signed_sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """RoPE on x (..., T, D) with full-width tables (T, D) from full_width().

    x * cos + (x2 | x1) * (-sin | sin) is the formula above in three ops (roll swaps
    the halves; the sign lives in the table), which matters for batch-1 decoding where
    every op costs microseconds of dispatch. Returned in x's dtype.

    The angles are always computed in fp32 (rope_cache). A bf16 x (under autocast) is
    rotated in bf16, with the tables' values rounded to bf16: mixing a bf16 x with fp32
    tables promoted every op to fp32 and cast back, a few % of a bf16 training step for
    a loss difference at bf16's own rounding (docs/performance.md, "RoPE in bf16").
    Tables (B, 1, T, D) rotate each row at its own positions (GPT.forward does for rows
    of a KV cache at different lengths).
    """
    if x.shape[-1] != cos.shape[-1]:
        raise ValueError(f"rope: head dim {x.shape[-1]} does not match the tables' {cos.shape[-1]}")
    if x.dtype != cos.dtype and x.dtype in (torch.bfloat16, torch.float16):
        signed_sin, cos = signed_sin.to(x.dtype), cos.to(x.dtype)
    return torch.addcmul(x * cos, x.roll(x.shape[-1] // 2, dims=-1), signed_sin).to(x.dtype)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE on queries and keys (B, H, T, D) with the (T, D/2) tables from rope_cache."""
    for name, t in (("q", q), ("k", k)):
        if t.shape[-1] % 2:
            raise ValueError(f"apply_rope: {name} has odd head dim {t.shape[-1]}; RoPE needs an even head dim")
    signed_sin, wide_cos = full_width(sin, cos)
    return rotate(q, signed_sin, wide_cos), rotate(k, signed_sin, wide_cos)

"""Rotary position embeddings (RoPE, Su et al. 2021), "rotate half" layout.

Each head vector of size D is split into two halves (x1, x2) that are rotated as D/2
complex pairs (x1[i], x2[i]) by the angle pos * theta^(-2i/D). Because a rotation by
angle a dotted with a rotation by angle b only depends on a - b, attention scores see
relative positions only, which is what lets the KV cache re-prefill a cropped window
starting at position 0 again.
"""

from __future__ import annotations

import torch


def rope_cache(
    T: int, D: int, theta: float = 10000.0, device: torch.device | str | None = None, dtype: torch.dtype | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sin, cos) tables of shape (T, D/2) for positions 0..T-1 and head dim D."""
    if D % 2:
        raise ValueError(f"rope: head dim {D} must be even (RoPE rotates pairs of channels)")
    # Angles in fp32 even when the tables are wanted in bf16: bf16 positions lose integers > 256.
    inv_freq = theta ** (-torch.arange(0, D, 2, device=device, dtype=torch.float32) / D)
    angles = torch.outer(torch.arange(T, device=device, dtype=torch.float32), inv_freq)
    dtype = dtype or torch.get_default_dtype()
    return angles.sin().to(dtype), angles.cos().to(dtype)


def rotate(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate x of shape (..., T, D) by the tables (T, D/2); returns x's shape and dtype."""
    half = x.shape[-1] // 2
    if x.shape[-1] != 2 * sin.shape[-1]:
        raise ValueError(f"rope: head dim {x.shape[-1]} does not match the tables' {2 * sin.shape[-1]} (must be even)")
    sin, cos = sin.to(x.dtype), cos.to(x.dtype)  # no-ops unless autocast changed x's dtype
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1)


def apply_rope(
    q: torch.Tensor, k: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE on queries and keys of shape (B, H, T, D) with tables from rope_cache(T, D)."""
    for name, t in (("q", q), ("k", k)):
        if t.shape[-1] % 2:
            raise ValueError(f"apply_rope: {name} has odd head dim {t.shape[-1]}; RoPE needs an even head dim")
    return rotate(q, sin, cos), rotate(k, sin, cos)

"""Transformer building blocks: causal self-attention with RoPE and a KV cache, the MLP,
the short convolution and the pre-norm residual block. No biases anywhere (they add
nothing at this scale). With a cache, a Span says where each row's new positions go."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from bytechat.core.config import ModelConfig
from bytechat.model.cache import LayerKV, Span
from bytechat.model.rope import rotate


def norm(n_embd: int) -> nn.Module:
    # LayerNorm rather than RMSNorm: on CPU it is one fused kernel, several times faster
    # per call than rms_norm, which matters for batch-1 decoding.
    return nn.LayerNorm(n_embd, bias=False)


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    # A plain function, not nn.Dropout modules: with p == 0 (the usual case) it costs
    # nothing, where a module call costs a few microseconds per byte when decoding.
    return F.dropout(x, p, training=True) if training and p > 0 else x


# Query rows per chunk in causal_attention (see there).
ATTN_CHUNK = 64
_BIASES: dict[tuple, torch.Tensor] = {}


def causal_bias(T: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(T, T) additive causal mask: 0 on and below the diagonal, -inf above (cached)."""
    key = (T, dtype, device)
    bias = _BIASES.get(key)
    if bias is None:
        bias = torch.full((T, T), float("-inf"), device=device).triu(1).to(dtype)
        _BIASES[key] = bias
    return bias


class _ChunkedCausalAttention(torch.autograd.Function):
    """Causal attention on q, k, v (N, T, D), contiguous, with a hand-written backward.

    Queries go in chunks of `chunk` rows, each against only the keys it may see
    (0 .. end of the chunk), so most of the masked upper triangle is never computed
    (5/8 of the full score matrix at 4 chunks); the mask is added inside the score
    matmul (baddbmm). The backward writes dq chunk by chunk and accumulates dk, dv in
    place, where autograd through slices would zero-fill and add whole-size gradients
    per chunk; the softmax backward uses rowsum(dO * O) (as flash attention does).
    Saved per layer: the probabilities of the computed chunks (5/8 of N x T x T at 4 chunks).
    """

    @staticmethod
    def forward(ctx, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int) -> torch.Tensor:
        N, T, D = q.shape
        scale = 1.0 / math.sqrt(D)
        bias = causal_bias(T, q.dtype, q.device)
        out = torch.empty_like(q)
        probs = []
        for start in range(0, T, chunk):
            end = min(T, start + chunk)
            scores = torch.baddbmm(
                bias[start:end, :end].expand(N, end - start, end),
                q[:, start:end],
                k[:, :end].transpose(1, 2),
                alpha=scale,
            )
            p = scores.softmax(dim=-1)
            out[:, start:end] = torch.bmm(p, v[:, :end])
            probs.append(p)
        ctx.save_for_backward(q, k, v, out, *probs)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        q, k, v, out, *probs = ctx.saved_tensors
        N, T, D = q.shape
        scale = 1.0 / math.sqrt(D)
        grad_out = grad_out.contiguous()
        # softmax backward: dS = P * (dP - rowsum(P * dP)), and rowsum(P * dP) = rowsum(dO * O).
        delta = (grad_out.float() * out.float()).sum(dim=-1, keepdim=True).to(grad_out.dtype)
        dq = torch.empty_like(q)
        dk = torch.zeros_like(k)
        dv = torch.zeros_like(v)
        for i, p in enumerate(probs):
            start = i * ctx.chunk
            end = min(T, start + ctx.chunk)
            go = grad_out[:, start:end]
            dv[:, :end].baddbmm_(p.transpose(1, 2), go)
            ds = torch.bmm(go, v[:, :end].transpose(1, 2)).sub_(delta[:, start:end]).mul_(p)
            dq[:, start:end] = torch.bmm(ds, k[:, :end])
            dk[:, :end].baddbmm_(ds.transpose(1, 2), q[:, start:end])
        return dq.mul_(scale), dk.mul_(scale), dv, None


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, chunk: int = ATTN_CHUNK) -> torch.Tensor:
    """softmax(q k^T / sqrt(D) + causal mask) v for q, k, v (B, H, T, D): the training
    path on CPU (see CausalSelfAttention.forward), without dropout.

    On CPU, torch's fused SDPA kernel (head dim 32) had a backward several times its
    forward and was the largest part of a training step; batched matmuls + softmax over
    the causal chunks (_ChunkedCausalAttention) run the same math in about half the time
    (docs/performance.md). Under bf16 autocast the scores and probabilities are bf16, as
    in any unfused attention under autocast.
    """
    B, H, T, D = q.shape
    q, k, v = (t.reshape(B * H, T, D).contiguous() for t in (q, k, v))
    return _ChunkedCausalAttention.apply(q, k, v, chunk).view(B, H, T, D)


def masked_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(D), where mask) v for rows at different lengths (mask: which
    keys each query may see), written out: for one new position per row it is faster on
    CPU than SDPA with a mask (docs/performance.md)."""
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.shape[-1]))
    return scores.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v


def write_cache(buf: torch.Tensor, new: torch.Tensor, span: Span, dim: int) -> torch.Tensor:
    """Write new (positions along `dim`, rows first) into buf at span's positions; return
    buf's positions 0..span.end-1 (a view). dim: the position dimension of both."""
    if span.start is not None:  # every row at the same positions: a slice
        buf.narrow(dim, span.start, span.end - span.start).copy_(new)
    else:  # each row at its own: index row b, position pos[b, t]
        rows = torch.arange(buf.shape[0], device=buf.device).unsqueeze(1)
        buf[(rows,) + (slice(None),) * (dim - 1) + (span.pos,)] = new.movedim(dim, 1) if dim > 1 else new
    return buf.narrow(dim, 0, span.end)


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.n_head, self.head_dim = cfg.n_head, cfg.head_dim
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=False)  # one matmul for q, k and v
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=False)
        self.proj.is_residual_projection = True  # GPT._init_weights scales its std
        self.dropout = cfg.dropout
        # QK-norm: q and k are RMS-normalised per head before RoPE, with a learned gain
        # per channel (q's then k's, starting at 1) so attention can still sharpen. It
        # bounds the attention logits, which keeps higher learning rates stable.
        self.qk_gain = nn.Parameter(torch.ones(2 * self.head_dim)) if cfg.qk_norm else None

    def qkv_heads(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q, k, v of shape (B, n_head, T, head_dim): QK-norm when the model has it, then
        RoPE on q and k. sin, cos: full-width tables (T, head_dim), see rope.full_width,
        or (B, 1, T, head_dim) when each row is at its own positions."""
        B, T, _ = x.shape
        qkv = self.qkv(x).view(B, T, 3, self.n_head, self.head_dim).permute(2, 0, 3, 1, 4)
        qk = qkv[:2]
        if self.qk_gain is not None:
            gain = self.qk_gain.view(2, 1, 1, 1, self.head_dim)
            qk = F.rms_norm(qk, (self.head_dim,)) * gain.to(qk.dtype)
        qk = rotate(qk, sin, cos)  # q and k rotated together: half the ops of two calls
        return qk[0], qk[1], qkv[2]

    def forward(
        self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor, kv: LayerKV | None = None, span: Span | None = None
    ) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv_heads(x, sin, cos)
        if kv is None and T > 1 and x.device.type == "cpu" and torch.is_grad_enabled():
            # Training on CPU: plain matmuls, a much faster backward (see causal_attention).
            # Elsewhere (GPUs, inference) the fused SDPA kernel below.
            y = causal_attention(q, k, v)
            return dropout(self.proj(y.transpose(1, 2).reshape(B, T, C)), self.dropout, self.training)
        if kv is None:
            # Dropout is on the residual branches (and the embedding), never on the attention
            # probabilities: so every device trains the same model, on CPU by the fast path.
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            k, v = write_cache(kv[0], k, span, 2), write_cache(kv[1], v, span, 2)
            if span.start is None:  # rows at different lengths
                y = masked_attention(q, k, v, span.mask)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=span.mask, is_causal=span.causal)
        y = y.transpose(1, 2).reshape(B, T, C)
        return dropout(self.proj(y), self.dropout, self.training)

    def probs(self, x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
        """Attention probabilities (B, n_head, T, T), computed explicitly (for tests/debugging)."""
        q, k, _ = self.qkv_heads(x, sin, cos)
        T = x.shape[1]
        scores = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)
        future = torch.ones(T, T, dtype=torch.bool, device=x.device).triu(diagonal=1)
        return scores.float().masked_fill(future, float("-inf")).softmax(dim=-1)


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, cfg.mlp_ratio * cfg.n_embd, bias=False)
        self.proj = nn.Linear(cfg.mlp_ratio * cfg.n_embd, cfg.n_embd, bias=False)
        self.proj.is_residual_projection = True
        self.dropout = cfg.dropout
        self.relu2 = cfg.activation == "relu2"

    def activate(self, u: torch.Tensor) -> torch.Tensor:
        """The nonlinearity on the hidden layer.
        relu2: relu(u)^2, sparse and cheap (as in Primer and the nanoGPT speedruns);
        gelu: tanh GELU (as in GPT-2), ~2x cheaper than the erf form on CPU."""
        return F.relu(u).square() if self.relu2 else F.gelu(u, approximate="tanh")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(self.proj(self.activate(self.fc(x))), self.dropout, self.training)


class ShortConv(nn.Module):
    """h + a depthwise causal convolution of h over its last `kernel` positions.

    Each channel becomes a learned mix of itself and the same channel a few bytes back,
    so a query or key can say "the bytes ending here are ...". That turns copying from
    the context (an induction head: find where the current bytes occurred before, read
    what came next) into one attention lookup, where plain attention first needs a
    previous-token head in an earlier layer. Short convolutions before attention are
    known to make in-context recall much easier for small models (the "canon layers" /
    short-conv results on associative recall); measured here in docs/notes.md.

    Starts as the identity (zero weights). With a KV cache, `buf` keeps this layer's
    inputs at every position, so decoding byte by byte sees the same window as training.
    """

    def __init__(self, n_embd: int, kernel: int) -> None:
        super().__init__()
        self.kernel = kernel
        self.weight = nn.Parameter(torch.zeros(n_embd, 1, kernel))

    def forward(self, h: torch.Tensor, buf: torch.Tensor | None = None, span: Span | None = None) -> torch.Tensor:
        B, T, C = h.shape
        pad = self.kernel - 1
        if buf is None:  # the whole sequence at once (training, eval): one convolution
            mixed = F.conv1d(F.pad(h.transpose(1, 2), (pad, 0)), self.weight.to(h.dtype), groups=C)
            return h + mixed.transpose(1, 2)
        # Decoding: each new position's window (its own input and the `pad` before it,
        # zeros before position 0) from the cache, weighted and summed: a few elementwise
        # ops, where a convolution call on so few positions costs many times its arithmetic.
        write_cache(buf, h, span, 1)
        if span.start is not None:
            first = max(0, span.start - pad)
            context = F.pad(buf[:, first : span.end], (0, 0, pad - (span.start - first), 0))
        else:  # each row at its own positions
            at = span.pos[:, :1] - pad + torch.arange(T + pad, device=h.device)  # (B, T + pad)
            rows = torch.arange(B, device=h.device).unsqueeze(1)
            context = buf[rows, at.clamp_min(0)].masked_fill((at < 0).unsqueeze(-1), 0.0)
        windows = context.unfold(1, self.kernel, 1)  # (B, T, C, kernel)
        return h + (windows * self.weight.to(h.dtype).squeeze(1)).sum(-1)


class Block(nn.Module):
    """Pre-norm residual block: x + attn(conv(norm(x))), then x + mlp(norm(x))
    (conv: ShortConv when cfg.conv_kernel > 0, else nothing)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = norm(cfg.n_embd)
        self.conv = ShortConv(cfg.n_embd, cfg.conv_kernel) if cfg.conv_kernel > 1 else None
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = norm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def attn_input(
        self, x: torch.Tensor, conv_buf: torch.Tensor | None = None, span: Span | None = None
    ) -> torch.Tensor:
        h = self.ln_1(x)
        return h if self.conv is None else self.conv(h, conv_buf, span)

    def forward(
        self,
        x: torch.Tensor,
        sin: torch.Tensor,
        cos: torch.Tensor,
        kv: LayerKV | None = None,
        span: Span | None = None,
        conv_buf: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_input(x, conv_buf, span), sin, cos, kv, span)
        return x + self.mlp(self.ln_2(x))

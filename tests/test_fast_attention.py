"""The CPU training path of attention (blocks.causal_attention): same values and
gradients as the fused SDPA kernel it replaces, and chosen only where it should be."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tests.helpers import model_config
from bytechat.model import GPT
from bytechat.model import blocks
from bytechat.model.blocks import causal_attention


@pytest.mark.parametrize("T, chunk", [(1, 4), (13, 4), (16, 16), (20, 64), (21, 8)])
def test_matches_sdpa_and_passes_gradcheck(T, chunk):
    gen = torch.Generator().manual_seed(T)
    q, k, v = (torch.randn(1, 2, T, 4, generator=gen, dtype=torch.float64, requires_grad=True) for _ in range(3))
    want = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    torch.testing.assert_close(causal_attention(q, k, v, chunk), want)
    assert torch.autograd.gradcheck(lambda a, b, c: causal_attention(a, b, c, chunk), (q, k, v))


def test_bf16_gradients_close_to_fp32():
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 96, 16, generator=gen) for _ in range(3))
    grad = torch.randn(2, 4, 96, 16, generator=gen)

    def run(dtype):
        leaves = [t.detach().to(dtype).clone().requires_grad_() for t in (q, k, v)]
        out = causal_attention(*leaves, chunk=32)
        out.backward(grad.to(dtype))
        return out.float(), [t.grad.float() for t in leaves]

    out32, grads32 = run(torch.float32)
    out16, grads16 = run(torch.bfloat16)
    assert (out16 - out32).norm() / out32.norm() < 2e-2
    for g16, g32 in zip(grads16, grads32):
        assert (g16 - g32).norm() / g32.norm() < 3e-2


def test_model_uses_it_only_for_cpu_training(monkeypatch):
    calls = []
    real = blocks.causal_attention
    monkeypatch.setattr(blocks, "causal_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    torch.manual_seed(0)
    model = GPT(model_config(n_layer=2, n_head=2, n_embd=32, block_size=32))
    idx = torch.randint(0, 256, (2, 20))
    _, loss = model(idx, idx)  # grad enabled: the training path
    assert len(calls) == 2
    loss.backward()
    with torch.no_grad():
        model(idx)  # inference: the fused kernel
    assert len(calls) == 2
    # Both paths give the same log-probabilities.
    with torch.no_grad():
        fused, _ = model(idx)
    trained, _ = model(idx)
    torch.testing.assert_close(trained.detach(), fused, rtol=0, atol=1e-5)


def test_masked_attention_matches_sdpa_with_the_mask():
    """The decoding path for rows at different lengths (one new position per row, each
    row's keys up to its own length) against torch's SDPA with the same boolean mask."""
    torch.manual_seed(0)
    q, k, v = torch.randn(5, 3, 1, 16), torch.randn(5, 3, 40, 16), torch.randn(5, 3, 40, 16)
    lengths = torch.tensor([1, 7, 40, 19, 33])
    mask = (torch.arange(40) < lengths[:, None]).view(5, 1, 1, 40)
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(blocks.masked_attention(q, k, v, mask), want, rtol=0, atol=1e-5)

"""The GPT model: shapes, RoPE, causality, KV cache, a training step."""

from __future__ import annotations

import math

import pytest
import torch

from bytechat.config import ModelConfig
from bytechat.model import GPT, apply_rope, rope_cache
from bytechat.model.rope import full_width, rotate

TINY = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=32)




def tiny_model(cfg: ModelConfig = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def random_bytes(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(seed))


def test_output_shape_and_loss():
    model = tiny_model()
    idx = random_bytes(3, 17)
    logits, loss = model(idx)
    assert logits.shape == (3, 17, 256) and loss is None
    _, loss = model(idx, targets=random_bytes(3, 17, seed=2))
    assert loss.dtype == torch.float32 and loss.ndim == 0
    # An untrained model is close to uniform over the 256 byte values.
    assert abs(loss.item() - math.log(256)) < 0.5


def test_state_dict_is_plain_and_tied():
    model = tiny_model()
    keys = list(model.state_dict())
    assert "wte.weight" in keys and not any("lm_head" in k or k.startswith(("module.", "_orig_mod.")) for k in keys)
    assert not any("rope" in k for k in keys), "rope tables are derived from the config"
    assert model.num_params() == sum(t.numel() for t in model.state_dict().values())
    L, C, T = TINY.n_layer, TINY.n_embd, TINY.block_size
    assert model.flops_per_byte() == 6 * model.num_params() + 12 * L * C * T


def test_residual_projections_have_scaled_init():
    cfg = ModelConfig(n_layer=8, n_head=2, n_embd=64, block_size=16)
    model = tiny_model(cfg)
    plain = model.blocks[0].mlp.fc.weight.std().item()
    scaled = model.blocks[0].mlp.proj.weight.std().item()
    assert plain == pytest.approx(0.02, rel=0.05)
    assert scaled == pytest.approx(0.02 / math.sqrt(2 * cfg.n_layer), rel=0.05)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rope_keeps_shape_dtype_device(dtype):
    q = torch.randn(2, 3, 5, 8, dtype=dtype)
    k = torch.randn(2, 3, 5, 8, dtype=dtype)
    sin, cos = rope_cache(5, 8, dtype=dtype)
    assert sin.shape == cos.shape == (5, 4) and sin.dtype == dtype
    rq, rk = apply_rope(q, k, sin, cos)
    for before, after in ((q, rq), (k, rk)):
        assert after.shape == before.shape and after.dtype == dtype and after.device == before.device
    # A rotation keeps every head vector's length.
    torch.testing.assert_close(rq.float().norm(dim=-1), q.float().norm(dim=-1), rtol=2e-2, atol=1e-5)


def test_rope_scores_depend_on_relative_position_only():
    D = 8
    q, k = torch.randn(D), torch.randn(D)
    sin, cos = full_width(*rope_cache(20, D))

    def score(m: int, n: int) -> float:
        qm = rotate(q.view(1, D), sin[m : m + 1], cos[m : m + 1])
        kn = rotate(k.view(1, D), sin[n : n + 1], cos[n : n + 1])
        return (qm @ kn.T).item()

    assert score(3, 1) == pytest.approx(score(15, 13), abs=1e-5)
    assert score(0, 0) == pytest.approx((q @ k).item(), abs=1e-5)


def test_rope_odd_head_dim_is_an_error():
    with pytest.raises(ValueError, match="head dim 7"):
        rope_cache(4, 7)
    sin, cos = rope_cache(4, 6)
    odd = torch.randn(1, 1, 4, 7)
    with pytest.raises(ValueError, match="head dim 7"):
        apply_rope(odd, odd, sin, cos)


def test_attention_never_looks_ahead():
    model = tiny_model()
    maps = model.attention_maps(random_bytes(2, 12))
    assert len(maps) == TINY.n_layer
    for probs in maps:
        assert probs.shape == (2, TINY.n_head, 12, 12)
        assert probs.triu(diagonal=1).abs().max().item() < 1e-7
        torch.testing.assert_close(probs.sum(-1), torch.ones(2, TINY.n_head, 12))


def test_changing_a_future_byte_never_changes_an_earlier_logit():
    model = tiny_model()
    idx = random_bytes(1, 20)
    base, _ = model(idx)
    for t in (0, 7, 19):
        changed = idx.clone()
        changed[0, t] = (changed[0, t] + 1) % 256
        logits, _ = model(changed)
        torch.testing.assert_close(logits[:, :t], base[:, :t], rtol=0, atol=1e-6)
        assert not torch.allclose(logits[:, t], base[:, t])


def test_kv_cache_chunks_match_full_forward():
    model = tiny_model()
    idx = random_bytes(2, 30)
    full, _ = model(idx)
    cache = model.new_cache(batch_size=2)
    pieces, pos = [], 0
    for size in (9, 1, 5, 1, 1, 13):  # chunked prefill after a prefix uses the explicit mask
        logits, _ = model(idx[:, pos : pos + size], cache=cache, start_pos=pos)
        pieces.append(logits)
        pos += size
    assert cache.length == 30
    torch.testing.assert_close(torch.cat(pieces, dim=1), full, rtol=0, atol=1e-4)


def test_forward_past_block_size_is_an_error():
    model = tiny_model()
    with pytest.raises(ValueError, match="block_size 32"):
        model(random_bytes(1, 33))


def test_decode_layout_keeps_the_values():
    model = tiny_model()
    idx = random_bytes(2, 10)
    before, _ = model(idx)
    model.use_decode_layout()
    after, _ = model(idx)
    torch.testing.assert_close(after, before, rtol=0, atol=1e-5)
    assert all(t.is_contiguous() or t.t().is_contiguous() for t in model.state_dict().values())


def test_training_step_reduces_loss_on_a_repeated_batch():
    model = tiny_model().train()
    idx = random_bytes(4, 33)
    x, y = idx[:, :-1], idx[:, 1:]
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        _, loss = model(x, targets=y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    assert losses[-1] < 0.7 * losses[0]

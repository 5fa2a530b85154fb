"""The GPT model: shapes, RoPE, causality, KV cache, a training step."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from bytechat.core.config import ModelConfig
from tests.helpers import model_config
from bytechat.model import GPT, apply_rope, rope_cache
from bytechat.model.rope import full_width, rotate

TINY = model_config(n_layer=2, n_head=2, n_embd=32, block_size=32)


def tiny_model(cfg: ModelConfig = TINY, seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(cfg).eval()


def random_bytes(B: int, T: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 256, (B, T), generator=torch.Generator().manual_seed(seed))


def test_output_shape_and_loss():
    model = tiny_model()
    idx = random_bytes(3, 17)
    log_probs, loss = model(idx)
    assert log_probs.shape == (3, 17, 256) and loss is None
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
    cfg = model_config(n_layer=8, n_head=2, n_embd=64, block_size=16)
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


# ---------------------------------------------------------------- causality, on the real paths

# block_size > 2 * ATTN_CHUNK (64), so the chunked training attention runs several chunks.
CAUSAL = model_config(n_layer=2, n_head=2, n_embd=32, block_size=160)
CAUSAL_CONFIGS = [pytest.param(CAUSAL, id="base")]
_OPTIONAL = {f.name for f in dataclasses.fields(ModelConfig)}
if "conv_kernel" in _OPTIONAL:  # optional parts that also mix positions must be causal too
    CAUSAL_CONFIGS.append(pytest.param(dataclasses.replace(CAUSAL, conv_kernel=4), id="conv"))
if "copy_dim" in _OPTIONAL:
    CAUSAL_CONFIGS.append(pytest.param(dataclasses.replace(CAUSAL, copy_dim=16), id="copy"))
if "copy_continue" in _OPTIONAL:
    CAUSAL_CONFIGS.append(
        pytest.param(dataclasses.replace(CAUSAL, copy_dim=16, copy_continue=True, conv_kernel=4), id="copy-going-on")
    )
if "qk_norm" in _OPTIONAL:
    CAUSAL_CONFIGS.append(
        pytest.param(dataclasses.replace(CAUSAL, qk_norm=True, activation="relu2"), id="qk-norm+relu2")
    )


def _training(model, idx):  # train mode, grad on, CPU: the chunked attention with its own backward
    model.train()
    try:
        log_probs, loss = model(idx, targets=idx)
        loss.backward()  # the path as training runs it, backward included
    finally:
        model.eval()
    return log_probs.detach()


def _eval_with_grad(model, idx):  # eval mode with grad (as in gradient checks): the same chunked path
    with torch.enable_grad():
        return model(idx)[0].detach()


def _no_grad(model, idx):  # inference without a cache: the fused SDPA kernel, is_causal
    with torch.no_grad():
        return model(idx)[0]


def _inference_mode(model, idx):
    with torch.inference_mode():
        return model(idx)[0].clone()


def _kv(sizes, grad):
    def run(model, idx):
        cache, pos, pieces = model.new_cache(batch_size=idx.shape[0]), 0, []
        with torch.set_grad_enabled(grad):
            for size in sizes:  # a prefill from 0, then chunks after a prefix (explicit mask), then single bytes
                pieces.append(model(idx[:, pos : pos + size], cache=cache)[0].detach())
                pos += size
        assert pos == idx.shape[1]
        return torch.cat(pieces, dim=1)

    return run


CHUNKS = (37, 1, 20, 1, 1, 60, 30)
PATHS = {
    "training": _training,
    "eval_with_grad": _eval_with_grad,
    "no_grad_sdpa": _no_grad,
    "inference_mode": _inference_mode,
    "kv_cache_no_grad": _kv(CHUNKS, grad=False),
    "kv_cache_with_grad": _kv(CHUNKS, grad=True),
    "kv_cache_byte_by_byte": _kv((1,) * 150, grad=False),
}


@pytest.mark.parametrize("cfg", CAUSAL_CONFIGS)
@pytest.mark.parametrize("path", list(PATHS))
def test_changing_a_future_byte_never_changes_an_earlier_logit(cfg, path):
    forward = PATHS[path]
    model = tiny_model(cfg)
    idx = random_bytes(2, 150)
    base = forward(model, idx)
    assert base.shape == (2, 150, 256)
    for t in (0, 1, 40, 63, 64, 100, 149):  # chunk edges included
        changed = idx.clone()
        changed[:, t] = (changed[:, t] + 1) % 256
        log_probs = forward(model, changed)
        torch.testing.assert_close(
            log_probs[:, :t], base[:, :t], rtol=0, atol=1e-6, msg=f"{path}: byte {t} leaked back"
        )
        assert not torch.allclose(log_probs[:, t], base[:, t]), "the change must show where it happens"


@pytest.mark.parametrize("cfg", CAUSAL_CONFIGS)
def test_every_path_gives_the_same_log_probs(cfg):
    model = tiny_model(cfg)
    idx = random_bytes(2, 150)
    want = _no_grad(model, idx)
    for name, forward in PATHS.items():
        torch.testing.assert_close(forward(model, idx), want, rtol=0, atol=1e-4, msg=name)


@pytest.mark.parametrize("cfg", CAUSAL_CONFIGS)
def test_rows_at_different_lengths_match_each_row_alone(cfg):
    """One cache, its rows at different lengths (continuous batching: padded and masked):
    each row's log-probabilities are what it gets in a cache of its own, within 1e-4
    (fp32), for single bytes and for chunks; moving a row keeps its sequence."""
    model = tiny_model(cfg)
    idx = random_bytes(3, 150)
    lengths = [5, 90, 37]
    batched, alone = model.new_cache(batch_size=4), [model.new_cache() for _ in lengths]
    with torch.no_grad():
        for r, n in enumerate(lengths):  # each prompt prefilled alone into its row, as the batch engine does
            model(idx[r : r + 1, :n], cache=batched.rows(r, r + 1))
            model(idx[r : r + 1, :n], cache=alone[r])
        batched.move_row(2, 3)
        batched.move_row(3, 2)
        rows, pos = batched.rows(0, 3), list(lengths)
        for size in (1, 1, 4, 1, 20):
            chunk = torch.stack([idx[r, pos[r] : pos[r] + size] for r in range(3)])
            got, _ = model(chunk, cache=rows)
            for r in range(3):
                want, _ = model(chunk[r : r + 1], cache=alone[r])
                torch.testing.assert_close(got[r : r + 1], want, rtol=0, atol=1e-4)
            pos = [p + size for p in pos]
    assert rows.lengths.tolist() == pos and batched.length == max(pos)


# ---------------------------------------------------------------- RoPE and tying


def test_rope_matches_a_hand_computed_rotation():
    # D = 4: pairs (x0, x2) and (x1, x3) turn by pos * theta^(-2i/D) = pos * 1 and pos * 0.01.
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    for pos in (0, 1, 3, 7):
        sin, cos = rope_cache(pos + 1, 4, theta=10000.0, dtype=torch.float32)
        a, b = pos * 1.0, pos * 0.01
        want = torch.tensor(
            [
                [
                    1 * math.cos(a) - 3 * math.sin(a),
                    2 * math.cos(b) - 4 * math.sin(b),
                    3 * math.cos(a) + 1 * math.sin(a),
                    4 * math.cos(b) + 2 * math.sin(b),
                ]
            ]
        )
        q, k = apply_rope(
            x.view(1, 1, 1, 4).expand(1, 1, pos + 1, 4), x.view(1, 1, 1, 4).expand(1, 1, pos + 1, 4), sin, cos
        )
        for got in (q, k):
            torch.testing.assert_close(got[0, 0, pos : pos + 1], want, rtol=1e-6, atol=1e-6)
        wide_sin, wide_cos = full_width(sin, cos)
        torch.testing.assert_close(
            rotate(x, wide_sin[pos : pos + 1], wide_cos[pos : pos + 1]), want, rtol=1e-6, atol=1e-6
        )


def test_rope_scores_change_with_relative_position():
    D = 8
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(D, generator=gen), torch.randn(D, generator=gen)
    sin, cos = full_width(*rope_cache(32, D))

    def score(m: int, n: int) -> float:
        qm = rotate(q.view(1, D), sin[m : m + 1], cos[m : m + 1])
        kn = rotate(k.view(1, D), sin[n : n + 1], cos[n : n + 1])
        return (qm @ kn.T).item()

    same_distance = [score(m + 2, m) for m in range(0, 25, 4)]
    assert max(same_distance) - min(same_distance) < 1e-5  # fp32: only m - n matters...
    distances = [score(10, 10 - d) for d in range(6)]
    assert min(abs(a - b) for a, b in zip(distances, distances[1:])) > 1e-3  # ...and it does matter


def test_the_model_sees_byte_order():
    # With no position information attention would see the last byte's past as a set:
    # swapping two earlier bytes would not change the last logits. RoPE makes it matter.
    model = tiny_model(CAUSAL)
    idx = random_bytes(1, 12)
    swapped = idx.clone()
    swapped[0, [2, 7]] = idx[0, [7, 2]]
    assert idx[0, 2] != idx[0, 7]
    a, b = _no_grad(model, idx)[0, -1], _no_grad(model, swapped)[0, -1]
    assert (a - b).abs().max() > 1e-4


def test_rope_theta_from_the_config_reaches_the_model():
    # model.rope_theta must be what the model rotates with, not a hard-coded 10000.
    base = tiny_model(TINY)
    other_cfg = dataclasses.replace(TINY, rope_theta=500.0)
    other = GPT(other_cfg).eval()
    other.load_state_dict(base.state_dict())  # same weights; only theta differs
    # The tables the model built are those of its own theta...
    for model, theta in ((base, TINY.rope_theta), (other, 500.0)):
        want_sin, want_cos = full_width(*rope_cache(TINY.block_size, TINY.head_dim, theta, dtype=torch.float32))
        torch.testing.assert_close(model.rope_sin, want_sin, rtol=0, atol=0)
        torch.testing.assert_close(model.rope_cos, want_cos, rtol=0, atol=0)
    # ...and they change what the model says about the same bytes.
    idx = random_bytes(1, 24)
    a, b = _no_grad(base, idx), _no_grad(other, idx)
    torch.testing.assert_close(a[:, 0], b[:, 0], rtol=0, atol=1e-5)  # position 0: no rotation at all
    assert (a[:, 1:] - b[:, 1:]).abs().max() > 1e-4


def test_output_layer_is_the_embedding_transposed():
    """Without a copy head the output is log_softmax(final norm @ embedding^T): the tied
    output layer, normalised (GPT.forward always returns log-probabilities)."""
    model = tiny_model()
    idx = random_bytes(2, 9)

    def log_probs_and_final_norm():
        seen = []
        hook = model.ln_f.register_forward_hook(lambda module, args, out: seen.append(out))
        try:
            log_probs = _no_grad(model, idx)
        finally:
            hook.remove()
        return log_probs, seen[-1]

    def expected(normed):
        return torch.log_softmax(normed @ model.wte.weight.T, dim=-1)

    log_probs, normed = log_probs_and_final_norm()
    torch.testing.assert_close(log_probs, expected(normed), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(log_probs.exp().sum(-1), torch.ones(2, 9), rtol=0, atol=1e-5)
    # Tied means one tensor: a change to the embedding is a change to the output layer.
    with torch.no_grad():
        model.wte.weight.mul_(1.5)
    log_probs, normed = log_probs_and_final_norm()
    torch.testing.assert_close(log_probs, expected(normed), rtol=1e-5, atol=1e-5)


def test_kv_cache_chunks_match_full_forward():
    model = tiny_model()
    idx = random_bytes(2, 30)
    full, _ = model(idx)
    cache = model.new_cache(batch_size=2)
    pieces, pos = [], 0
    for size in (9, 1, 5, 1, 1, 13):  # chunked prefill after a prefix uses the explicit mask
        log_probs, _ = model(idx[:, pos : pos + size], cache=cache)
        pieces.append(log_probs)
        pos += size
    assert cache.lengths.tolist() == [30, 30]
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


def test_dropout_is_on_the_residual_branches_and_keeps_the_fast_cpu_path(monkeypatch):
    """dropout > 0 trains through the chunked CPU attention (it used to fall back to the
    slow fused kernel), masks differ between training steps, and eval is deterministic."""
    import bytechat.model.blocks as blocks

    calls = []
    real = blocks.causal_attention
    monkeypatch.setattr(blocks, "causal_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    model = GPT(model_config(dropout=0.5))
    idx = torch.randint(0, 256, (2, 16))
    model.train()
    first, second = model(idx, targets=idx)[1], model(idx, targets=idx)[1]
    assert calls and first.item() != second.item()
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(idx)[0], model(idx)[0])

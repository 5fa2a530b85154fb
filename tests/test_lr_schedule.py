"""The learning-rate schedule: warmup from ~0 to lr, cosine down to min_lr at the last step."""

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.helpers import train_config
from bytechat.train.schedule import learning_rate, lr_at

CFG = train_config(steps=1000, lr=2e-3, min_lr=3e-5, warmup_steps=200)


def test_warmup_starts_near_zero_and_peaks_at_warmup():
    assert 0 < lr_at(0, CFG) < CFG.lr / 100
    assert lr_at(CFG.warmup_steps, CFG) == pytest.approx(CFG.lr, rel=1e-12)


def test_warmup_is_linear_and_increasing():
    rates = [lr_at(s, CFG) for s in range(CFG.warmup_steps + 1)]
    diffs = [b - a for a, b in zip(rates, rates[1:])]
    assert all(d > 0 for d in diffs)
    assert max(diffs) == pytest.approx(min(diffs), rel=1e-9)


def test_last_step_is_min_lr():
    assert lr_at(CFG.steps - 1, CFG) == pytest.approx(CFG.min_lr, rel=1e-12)


def test_cosine_midpoint():
    mid = (CFG.warmup_steps + CFG.steps - 1) / 2
    assert learning_rate(int(mid), lr=1.0, min_lr=0.0, warmup_steps=CFG.warmup_steps, steps=CFG.steps) == pytest.approx(
        0.5, abs=2e-3
    )


@given(
    steps=st.integers(2, 5000),
    warmup_frac=st.floats(0, 0.9),
    lr=st.floats(1e-5, 1.0),
    min_frac=st.floats(1e-4, 1.0),
)
def test_monotone_decay_after_warmup_and_bounded(steps, warmup_frac, lr, min_frac):
    warmup = int(warmup_frac * (steps - 1))
    min_lr = lr * min_frac
    rates = [learning_rate(s, lr=lr, min_lr=min_lr, warmup_steps=warmup, steps=steps) for s in range(steps)]
    after = rates[warmup:]
    assert all(b <= a * (1 + 1e-12) for a, b in zip(after, after[1:]))
    assert all(min_lr * (1 - 1e-9) <= r <= lr * (1 + 1e-9) for r in after)
    assert all(0 < r <= lr for r in rates)
    assert math.isclose(rates[-1], min_lr if warmup < steps - 1 else lr, rel_tol=1e-9)


def test_negative_step_is_an_error():
    with pytest.raises(ValueError, match="step"):
        lr_at(-1, CFG)


@pytest.mark.parametrize("fraction", [0.25, 0.75])
def test_cosine_at_the_quarter_points_where_linear_decay_differs(fraction):
    # steps 1001, warmup 200: the decay runs over steps 200..1000, so step 400 is a quarter.
    step = 200 + round(fraction * 800)
    lr, min_lr = 2e-3, 3e-5
    got = learning_rate(step, lr=lr, min_lr=min_lr, warmup_steps=200, steps=1001)
    cosine = min_lr + (lr - min_lr) * 0.5 * (1 + math.cos(math.pi * fraction))  # 0.854 / 0.146 of the way
    linear = lr - (lr - min_lr) * fraction
    assert got == pytest.approx(cosine, rel=1e-12)
    assert abs(got - linear) > 0.1 * (lr - min_lr)  # a linear decay would be far off here

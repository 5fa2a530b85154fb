"""Schedules over a run's optimizer steps: the learning rate and the data phase.

Both are pure functions of the optimizer step (0-based: the step about to be taken), so
a resumed run gets exactly the rates and data mixes an uninterrupted one would have.

Learning rate: linear warmup, then cosine decay to min_lr at the last step.

    step 0            lr / (warmup_steps + 1)      (close to 0, but not a wasted step)
    step warmup_steps lr                           (the peak)
    step steps - 1    min_lr                       (the last step)
"""

from __future__ import annotations

import math

from bytechat.core.config import TrainConfig

BASE, CHAT = "base", "chat"  # data phases: batches drawn by p_train, then by p_chat


def learning_rate(step: int, *, lr: float, min_lr: float, warmup_steps: int, steps: int) -> float:
    if step < 0:
        raise ValueError(f"step: must be >= 0 (got {step})")
    if step < warmup_steps:
        return lr * (step + 1) / (warmup_steps + 1)
    last = steps - 1
    if last <= warmup_steps:  # a run too short for a decay phase stays at the peak
        return lr
    if step >= last:
        return min_lr
    progress = (step - warmup_steps) / (last - warmup_steps)
    # Written as a drop from lr so progress 0 gives lr exactly (no rounding above the peak).
    return lr - (lr - min_lr) * 0.5 * (1.0 - math.cos(math.pi * progress))


def lr_at(step: int, cfg: TrainConfig) -> float:
    """The learning rate of optimizer step `step` under a TrainConfig."""
    return learning_rate(step, lr=cfg.lr, min_lr=cfg.min_lr, warmup_steps=cfg.warmup_steps, steps=cfg.steps)


def chat_start(cfg: TrainConfig) -> int:
    """The first step of the chat phase: the last chat_fraction of the steps (rounded);
    cfg.steps when there is none (chat_fraction 0, or a run too short to round to 1 step)."""
    return cfg.steps - round(cfg.steps * cfg.chat_fraction)


def phase_at(step: int, cfg: TrainConfig) -> str:
    """BASE or CHAT: which mix optimizer step `step` draws its batches by."""
    return CHAT if step >= chat_start(cfg) else BASE

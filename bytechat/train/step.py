"""The step math of training, shared by the Trainer (bytechat.train.trainer) and the bench
(tools/bench.py), so the bench measures the real step: the optimizer, one optimizer step,
autocast, and the validation losses that pick best.pt.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Iterable, Mapping

import torch

from bytechat.core.config import TrainConfig
from bytechat.train.distributed import Dist
from bytechat.train.schedule import lr_at


def build_optimizer(model: torch.nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.Optimizer:
    """The optimizer cfg.optimizer names, with weight decay on matrices only (not on norm
    gains, biases and other vectors, which decay would only pull away from 1 / 0).

    adamw: AdamW on everything.
    muon:  Muon on the hidden weight matrices (attention, MLP, copy-head projections),
           whose updates it orthogonalises; AdamW on the rest: the embedding (tied to the
           output layer, so also the output projection), vectors, the copy gate and the
           convolutions. Muon's lr is scaled to match AdamW's update size
           (adjust_lr_fn="match_rms_adamw"), so both read the same lr schedule.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    hidden = [p for n, p in named if cfg.optimizer == "muon" and is_hidden_matrix(n, p)]
    taken = {id(p) for p in hidden}
    rest = [p for _, p in named if id(p) not in taken]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": cfg.weight_decay},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    kwargs = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:  # one fused kernel for all parameters where this torch/device has it
        adamw = torch.optim.AdamW(groups, fused=device.type in ("cpu", "cuda", "mps"), **kwargs)
    except (RuntimeError, TypeError):
        adamw = torch.optim.AdamW(groups, foreach=True, **kwargs)
    if not hidden:
        return adamw
    muon = torch.optim.Muon(hidden, lr=cfg.lr, weight_decay=cfg.weight_decay, adjust_lr_fn="match_rms_adamw")
    return Optimizers(muon, adamw)


def is_hidden_matrix(name: str, p: torch.Tensor) -> bool:
    """A weight matrix inside the network, which Muon is for: 2-D, both sides wider than 1,
    and not the byte embedding (an input/output layer)."""
    return p.dim() == 2 and min(p.shape) > 1 and name != "wte.weight"


class Optimizers:
    """Several optimizers over disjoint parameters, stepped, zeroed and checkpointed as
    one: param_groups lists all their groups (so the lr schedule sets every group), and
    the state dict keeps each one's own."""

    def __init__(self, *parts: torch.optim.Optimizer) -> None:
        self.parts = parts

    @property
    def param_groups(self) -> list[dict]:
        # Read through every time: load_state_dict gives each part new group dicts.
        return [g for part in self.parts for g in part.param_groups]

    @torch.no_grad()
    def step(self, closure=None):
        for part in self.parts:
            part.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts:
            part.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        parts = [part.state_dict() for part in self.parts]
        return {"param_groups": [g for sd in parts for g in sd["param_groups"]], "parts": parts}

    def load_state_dict(self, state_dict: dict) -> None:
        parts = state_dict.get("parts", [])
        if len(parts) != len(self.parts):
            raise ValueError(f"optimizer state: {len(parts)} parts saved, {len(self.parts)} in use")
        for part, sd in zip(self.parts, parts):
            part.load_state_dict(sd)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def optimizer_step(
    forward: Callable,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    step: int,
    micro_batches: Iterable,
    device: torch.device,
    amp: torch.dtype | None,
    grad_sync: Callable[[bool], contextlib.AbstractContextManager] = lambda last: contextlib.nullcontext(),
) -> torch.Tensor:
    """One optimizer step as training takes it and the bench measures it: the lr of step, cfg.grad_accum
    micro-batches (forward under autocast, backward of loss / grad_accum, inside grad_sync(last)), clip,
    step, zero_grad. forward: the model as called (DDP, compiled). A micro-batch is (x, y) or, for a
    model with a span head, (x, y, spans). Returns the mean micro-batch loss."""
    for group in optimizer.param_groups:
        group["lr"] = lr_at(step, cfg)
    total = torch.zeros((), device=device)
    for micro, (x, y, *spans) in enumerate(micro_batches):
        with grad_sync(micro == cfg.grad_accum - 1):
            with autocast(device, amp):
                _, loss = forward(x, y, spans=spans[0]) if spans else forward(x, y)
            (loss / cfg.grad_accum).backward()
        total += loss.detach().float()
    if cfg.grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return total / cfg.grad_accum


@torch.inference_mode()
def validation_losses(
    model: torch.nn.Module, batches: Mapping[str, list], device: torch.device, dtype: torch.dtype | None, dist: Dist
) -> dict[str, float]:
    """Mean loss over each source's fixed batches."""
    was_training = model.training
    model.eval()
    losses = {}
    for source, pairs in batches.items():
        total = torch.zeros((), device=device, dtype=torch.float32)
        for x, y in pairs:
            with autocast(device, dtype):
                _, loss = model(x, y)
            total += loss.float()
        losses[source] = float(dist.mean(total / len(pairs)))
    model.train(was_training)
    return losses


# What a run is for, in two halves of equal weight (see selection_loss).
LANGUAGE_SOURCES, CHAT_SOURCES = ("wiki", "roam"), ("primer", "grounded")


def selection_loss(losses: Mapping[str, float], p_train: Mapping[str, float], p_chat: Mapping[str, float]) -> float:
    """The validation loss best.pt is chosen by: half language, half chat.

    language: wiki and roam val (held-out English and your own held-out notes), weighted as
    p_train weights them; chat: primer and grounded val (dialogues), weighted as p_chat does.
    Chat alone would mislead: the grounded dialogues share their templates, so their val
    loss keeps falling while a small corpus is overfitted and the language gets worse; and
    language alone would pick a model from before the chat phase that cannot hold a turn.
    """
    language = mixed_loss({s: losses[s] for s in LANGUAGE_SOURCES if s in losses}, p_train)
    chat = mixed_loss({s: losses[s] for s in CHAT_SOURCES if s in losses}, p_chat)
    return (language + chat) / 2


def is_better(val_loss: float, answers: float | None, best_loss: float | None, best_answers: float | None) -> bool:
    """Whether an evaluation (val/loss, and the answer probe's share in the chat phase, else
    None) beats the best so far. Right answers count first: held-out loss keeps rising late
    in the chat phase while the greedy replies get right more often (bytechat.eval.answer_probe).
    Any evaluation with answers beats one without (a model before the chat phase cannot
    hold a turn); equal answers, or none, go by val/loss, language and chat together.
    """
    if best_loss is None:
        return True
    if (answers is None) != (best_answers is None):
        return answers is not None
    if answers is not None and answers != best_answers:
        return answers > best_answers
    return val_loss < best_loss


def mixed_loss(losses: Mapping[str, float], p: Mapping[str, float]) -> float:
    """The validation loss weighted by a training mix p (sources p leaves out: a plain mean)."""
    weights = {s: p[s] for s in losses if p.get(s, 0) > 0}
    total = sum(weights.values())
    if not total:
        return float(sum(losses.values()) / max(1, len(losses)))
    return sum(losses[s] * w for s, w in weights.items()) / total

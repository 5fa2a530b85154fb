"""Test helpers shared by several test modules."""

from __future__ import annotations

import torch

from bytechat.config import ModelConfig, TrainConfig
from bytechat.model import GPT

# A tiny profile, every required key spelled out (as params.yaml must): a plain GPT (no
# short convolution, no copy head) and a 12-step run.
TINY_MODEL = {
    "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
    "rope_theta": 10000.0, "mlp_ratio": 4, "dropout": 0.0, "conv_kernel": 0, "copy_dim": 0, "copy_continue": False,
}  # fmt: skip
TINY_TRAIN = {
    "steps": 12, "batch_size": 4, "grad_accum": 2, "lr": 0.003, "min_lr": 0.0001, "warmup_steps": 3,
    "weight_decay": 0.1, "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "compile": False,
    "eval_every": 6, "eval_batches": 2, "checkpoint_every": 4, "log_every": 2, "dtype": "fp32",
    "chat_fraction": 0.25,
}  # fmt: skip


def model_config(**values) -> ModelConfig:
    """TINY_MODEL with `values` changed."""
    return ModelConfig(**{**TINY_MODEL, **values})


def train_config(**values) -> TrainConfig:
    """TINY_TRAIN with `values` changed."""
    return TrainConfig(**{**TINY_TRAIN, **values})

# Two dialogues a tiny model learns by heart: an ASCII one and a multi-byte one.
TRANSCRIPT = "user: hi\nassistant: hello\nuser: 日本\nassistant: 日本語🙂\n"


def train_chat_model(steps: int = 80) -> GPT:
    """A 2x32 model trained ~1 s on TRANSCRIPT repeated, in eval mode (deterministic)."""
    torch.manual_seed(0)
    cfg = model_config(block_size=64)
    model = GPT(cfg)
    data = torch.tensor(list((TRANSCRIPT * 40).encode("utf-8")))
    rng = torch.Generator().manual_seed(0)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    T = cfg.block_size
    for _ in range(steps):
        starts = torch.randint(0, len(data) - T - 1, (16,), generator=rng).tolist()
        x = torch.stack([data[i : i + T] for i in starts])
        y = torch.stack([data[i + 1 : i + T + 1] for i in starts])
        _, loss = model(x, targets=y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()

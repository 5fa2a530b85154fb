"""Test helpers shared by several test modules."""

from __future__ import annotations

import torch

from bytechat.config import ModelConfig
from bytechat.model import GPT

# Two dialogues a tiny model learns by heart: an ASCII one and a multi-byte one.
TRANSCRIPT = "user: hi\nassistant: hello\nuser: 日本\nassistant: 日本語🙂\n"


def train_chat_model(steps: int = 80) -> GPT:
    """A 2x32 model trained ~1 s on TRANSCRIPT repeated, in eval mode (deterministic)."""
    torch.manual_seed(0)
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=32, block_size=64)
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

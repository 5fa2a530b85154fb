"""Test helpers shared by several test modules."""

from __future__ import annotations

import random
from pathlib import Path

import torch
import yaml

from bytechat.core.config import SOURCES, ModelConfig, TrainConfig
from bytechat.model import GPT
from bytechat.data.streams import write_stream

REPO = Path(__file__).resolve().parent.parent

# A tiny profile, every required key spelled out (as params.yaml must): a plain GPT (no
# short convolution, no copy head) and a 12-step run.
TINY_MODEL = {
    "n_layer": 2,
    "n_head": 2,
    "n_embd": 32,
    "block_size": 32,
    "rope_theta": 10000.0,
    "mlp_ratio": 4,
    "dropout": 0.0,
    "conv_kernel": 0,
    "copy_dim": 0,
    "copy_continue": False,
    "span_dim": 0,
    "span_weight": 0.0,
    "qk_norm": False,
    "activation": "gelu",
}
TINY_TRAIN = {
    "steps": 12,
    "batch_size": 4,
    "grad_accum": 2,
    "optimizer": "adamw",
    "lr": 0.003,
    "min_lr": 0.0001,
    "warmup_steps": 3,
    "weight_decay": 0.1,
    "beta1": 0.9,
    "beta2": 0.95,
    "grad_clip": 1.0,
    "compile": False,
    "eval_every": 6,
    "eval_batches": 2,
    "checkpoint_every": 4,
    "log_every": 2,
    "dtype": "fp32",
    "chat_fraction": 0.25,
    "answer_probe": 0,
}


def model_config(**values) -> ModelConfig:
    """TINY_MODEL with `values` changed."""
    return ModelConfig(**{**TINY_MODEL, **values})


def train_config(**values) -> TrainConfig:
    """TINY_TRAIN with `values` changed."""
    return TrainConfig(**{**TINY_TRAIN, **values})


# Two dialogues a tiny model learns by heart: an ASCII one and a multi-byte one.
TRANSCRIPT = "user: hi\nassistant: hello\nuser: 日本\nassistant: 日本語🙂\n"


def overfit(model: GPT, text, steps: int, seed: int = 0) -> GPT:
    """model trained steps AdamW steps (lr 1e-2, 16 windows a step) on the bytes of text,
    or of text(generator) drawn anew each step; returned in eval mode (deterministic)."""
    rng = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    T = model.config.block_size
    for _ in range(steps):
        data = torch.tensor(list((text(rng) if callable(text) else text).encode("utf-8")))
        starts = torch.randint(0, len(data) - T - 1, (16,), generator=rng).tolist()
        x = torch.stack([data[i : i + T] for i in starts])
        y = torch.stack([data[i + 1 : i + T + 1] for i in starts])
        _, loss = model(x, targets=y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


class RecordingEngine:
    """A stand-in for ChatEngine that answers "ok" and records each (messages, sampling)
    it was asked with, for tests of what the chat path sends the engine."""

    block_size = 512

    def __init__(self) -> None:
        self.calls: list[tuple[list, object]] = []

    def reply(self, messages, sampling, seed=None):
        self.calls.append((messages, sampling))
        return type("Done", (), {"reply": "ok", "finish_reason": "stop"})()


def train_chat_model(steps: int = 80) -> GPT:
    """A 2x32 model trained ~1 s on TRANSCRIPT repeated, in eval mode (deterministic)."""
    torch.manual_seed(0)
    return overfit(GPT(model_config(block_size=64)), TRANSCRIPT * 40, steps)


# ---------------------------------------------------------------- a whole tiny run

WORDS = "the cat sat on a mat and then went to sleep while dogs barked at the moon".split()


def write_params(root: Path, *, seed: int = 7, **train_overrides) -> Path:
    """root/params.yaml with one profile, "tiny" (TINY_MODEL, TINY_TRAIN with train_overrides)."""
    params = {
        "seed": seed,
        "data": {"wikitext_source": "offline", "wikitext_config": "wikitext-2-raw-v1", "val_fraction": 0.1},
        "p_train": {"wiki": 0.6, "roam": 0.3, "primer": 0.1, "grounded": 0.0},
        "p_chat": {"wiki": 0.2, "roam": 0.2, "primer": 0.3, "grounded": 0.3},
        "profiles": {"tiny": {"model": dict(TINY_MODEL), "train": {**TINY_TRAIN, **train_overrides}}},
        "grounded": yaml.safe_load((REPO / "params.yaml").read_text())["grounded"],
    }
    path = root / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    return path


def write_tiny_streams(root: Path, seed: int = 0) -> None:
    rng = random.Random(seed)
    streams = root / "artifacts" / "streams"
    for source in SOURCES:
        for split, n_docs in (("train", 60), ("val", 12)):
            docs = [" ".join(rng.choice(WORDS) for _ in range(12)) for _ in range(n_docs)]
            write_stream(docs, streams / f"{source}_{split}.bin", source)
    write_stream(["a test document, " * 20], streams / "wiki_test.bin", "wiki")


def make_root(root: Path, **train_overrides) -> Path:
    """A repo root with params.yaml (profile "tiny") and tiny streams."""
    root.mkdir(parents=True, exist_ok=True)
    write_params(root, **train_overrides)
    write_tiny_streams(root)
    return root


def train_tiny(**kwargs):
    """Train profile "tiny" of the current root (the tiny_root fixture) in this process."""
    from bytechat.train.trainer import train

    return train("tiny", device="cpu", quiet=True, **kwargs)


def logged_step(root: Path) -> int:
    """The last step in the dvclive train loss history of root's tiny run (0 before the first log)."""
    tsv = root / "artifacts" / "runs" / "tiny" / "live" / "plots" / "metrics" / "train" / "loss.tsv"
    try:
        rows = tsv.read_text().splitlines()[1:]
    except FileNotFoundError:
        return 0
    steps = [int(r.split("\t")[0]) for r in rows if r.split("\t")[0].isdigit()]
    return max(steps, default=0)


def write_tree(root: Path, files: dict[str, str | bytes]) -> Path:
    """Files under root (text as UTF-8, bytes as they are), folders made as needed; root."""
    for name, content in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root

"""Start the real chat server as a subprocess on a free loopback port (for the browser
test and the load test), with a tiny random model when no trained one is wanted."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

import httpx

# A tiny plain GPT and the training settings its checkpoint records (every required key).
TINY = dict(
    n_layer=1,
    n_head=2,
    n_embd=32,
    block_size=64,
    rope_theta=10000.0,
    mlp_ratio=4,
    dropout=0.0,
    conv_kernel=0,
    copy_dim=0,
    copy_continue=False,
    span_dim=0,
    span_weight=0.0,
    qk_norm=False,
    activation="gelu",
)
TINY_TRAIN = dict(
    steps=1,
    batch_size=1,
    grad_accum=1,
    optimizer="adamw",
    lr=1e-3,
    min_lr=1e-3,
    warmup_steps=0,
    weight_decay=0.1,
    beta1=0.9,
    beta2=0.95,
    grad_clip=1.0,
    eval_every=1,
    eval_batches=1,
    checkpoint_every=1,
    dtype="fp32",
    compile=False,
    chat_fraction=0.0,
    answer_probe=0,
)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def save_tiny_model(
    folder: str | Path, seed: int = 0, block_size: int = TINY["block_size"], config: dict | None = None
) -> Path:
    """A randomly initialised tiny GPT, saved as a training checkpoint and exported like a
    trained one; returns the export folder (what `--ckpt` takes). block_size 512 leaves
    room for notes in the prompt. config: other model settings (e.g. a profile's model)."""
    import torch

    from bytechat.model.checkpoint import build_checkpoint, save_checkpoint
    from bytechat.core.config import ModelConfig, TrainConfig
    from bytechat.model.export import export_checkpoint
    from bytechat.model import GPT

    torch.manual_seed(seed)
    config = ModelConfig(**({**TINY, "block_size": block_size} if config is None else {**TINY, **config}))
    model = GPT(config)
    ckpt = build_checkpoint(
        model=model,
        optimizer=torch.optim.AdamW(model.parameters()),
        model_config=config,
        train_config=TrainConfig(**TINY_TRAIN),
        profile="tiny-random",
        step=0,
        val_loss=None,
        best_val_loss=None,
        sampler=torch.Generator().manual_seed(seed),
        data={},
    )
    folder = Path(folder)
    save_checkpoint(ckpt, folder / "tiny.pt")
    return export_checkpoint(folder / "tiny.pt", folder / "export")


@contextlib.contextmanager
def running_server(
    ckpt: str | Path,
    *extra_args: str,
    startup_timeout_s: float = 60.0,
    log_path: str | Path | None = None,
    env: dict[str, str] | None = None,
) -> Iterator[str]:
    """`python -m bytechat.serve.web.cli --ckpt ckpt` on a free port; yields its base URL.
    The server's output goes to log_path if given (kept after it stops), else a temp file;
    env is added to this process's environment."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bytechat.serve.web.cli",
        "--ckpt",
        str(ckpt),
        "--port",
        str(port),
        "--log-level",
        "warning",
        *extra_args,
    ]
    env = {**os.environ, "BYTECHAT_DEVICE": os.environ.get("BYTECHAT_DEVICE", "cpu"), **(env or {})}
    # A file, not a pipe: a full pipe would block the server.
    with open(log_path, "w+b") if log_path is not None else tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_for_health(url, process, log, startup_timeout_s)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_health(url: str, process: subprocess.Popen, log, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            output = log.read().decode("utf-8", "replace").strip()
            raise RuntimeError(f"the server exited with {process.returncode} at start-up: {output[-2000:]}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the server did not answer {url}/health within {timeout_s:.0f} s")

"""Score a model on whole byte streams: mean loss and bits per byte (bpb), next to what
gzip -9, bz2 -9 and xz -9 need for the same bytes.

    python -m bytechat.eval.bpb --ckpt artifacts/runs/smoke/checkpoints/best.pt notes.txt ...
    bytechat-eval --ckpt artifacts/export/smoke notes.txt

Every byte after the first is predicted exactly once: the stream is cut into
non-overlapping windows of block_size predictions; a last, shorter remainder is scored
with the full block of bytes before it as context (only its new bytes count). Windows
start cold (no context from the window before), the usual "non-overlapping" estimate,
a little pessimistic next to a sliding window.

Scoring uses bf16 autocast where the hardware runs it fast (--dtype auto, the default; the
loss itself is always computed in fp32): 2.4x faster than fp32 on a Zen 4 CPU for the smoke
model, and the bpb differed by 1e-5. --dtype fp32 gives the exact fp32 numbers.

bpb = loss / ln 2 (loss in nats per predicted byte). The compressors' bpb is
8 * compressed size / stream size, container headers included.
"""

from __future__ import annotations

import argparse
import bz2
import contextlib
import gzip
import lzma
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.core.atomic import write_json, write_text
from bytechat.text.chat_format import render_transcript
from bytechat.model.checkpoint import find_checkpoint
from bytechat.core.config import load_params
from bytechat.core.device import autocast_dtype, get_device
from bytechat.serve.generate import ChatEngine, SamplingConfig
from bytechat.eval import refusals
from bytechat.eval.grounded import evaluate_grounded
from bytechat.data.streams import open_stream

COMPRESSORS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda data: gzip.compress(data, compresslevel=9, mtime=0),
    "bz2": lambda data: bz2.compress(data, compresslevel=9),
    "xz": lambda data: lzma.compress(data, preset=9),
}
DEFAULT_BATCH = 32  # windows per forward pass


@dataclass(frozen=True)
class Window:
    """Inputs data[start : start + length], targets one byte later; the first `skip`
    predictions are context only (already scored by the window before)."""

    start: int
    length: int
    skip: int = 0


def plan_windows(n_bytes: int, block_size: int) -> list[Window]:
    """Windows that predict each of bytes 1..n_bytes-1 exactly once."""
    n_targets = n_bytes - 1
    if n_targets <= 0:
        return []
    full, rest = divmod(n_targets, block_size)
    windows = [Window(i * block_size, block_size) for i in range(full)]
    if rest and full:
        windows.append(Window(n_targets - block_size, block_size, skip=block_size - rest))
    elif rest:
        windows.append(Window(0, rest))
    return windows


@dataclass(frozen=True)
class Score:
    loss: float  # mean nats per predicted byte
    bytes: int  # stream length (predictions: bytes - 1)

    @property
    def bpb(self) -> float:
        return self.loss / math.log(2)


def _batches(windows: Sequence[Window], size: int) -> list[list[Window]]:
    """Windows grouped into batches of equal length (a short first window goes alone)."""
    groups: list[list[Window]] = []
    for w in windows:
        if groups and len(groups[-1]) < size and groups[-1][0].length == w.length:
            groups[-1].append(w)
        else:
            groups.append([w])
    return groups


def _window_tensors(
    data: np.ndarray, group: Sequence[Window], device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    rows = np.stack([np.asarray(data[w.start : w.start + w.length + 1], dtype=np.int64) for w in group])
    x = torch.from_numpy(rows[:, :-1].copy())
    y = torch.from_numpy(rows[:, 1:].copy())
    for i, w in enumerate(group):
        y[i, : w.skip] = -1  # context only: not scored again
    return x.to(device), y.to(device)


@torch.inference_mode()
def score_bytes(
    model: torch.nn.Module,
    data: np.ndarray | bytes,
    *,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = DEFAULT_BATCH,
    desc: str = "eval",
    progress: bool = True,
) -> Score:
    """Mean loss of model over every byte of data after the first (deterministic)."""
    data = np.frombuffer(data, dtype=np.uint8) if isinstance(data, (bytes, bytearray)) else data
    if len(data) < 2:
        raise ValueError(f"{desc}: needs at least 2 bytes to score (got {len(data)})")
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    windows = plan_windows(len(data), model.config.block_size)
    total, count = 0.0, 0
    for group in tqdm(_batches(windows, batch_size), desc=desc, unit="batch", leave=False, disable=not progress):
        x, y = _window_tensors(data, group, device)
        with torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext():
            logits, _ = model(x)
        nll = F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), ignore_index=-1, reduction="sum")
        total += float(nll)
        count += int((y >= 0).sum())
    model.train(was_training)
    assert count == len(data) - 1, f"{desc}: scored {count} of {len(data) - 1} bytes"
    return Score(loss=total / count, bytes=len(data))


def compressor_bpb(data: bytes) -> dict[str, float]:
    """Bits per byte of gzip -9, bz2 -9 and xz -9 on data (reference points)."""
    if not data:
        raise ValueError("compressor_bpb: empty data")
    return {f"{name}_bpb": 8 * len(compress(data)) / len(data) for name, compress in COMPRESSORS.items()}


def evaluate_bytes(
    model: torch.nn.Module,
    data: np.ndarray | bytes,
    *,
    name: str,
    device: torch.device | None = None,
    dtype: torch.dtype | None = None,
    batch_size: int = DEFAULT_BATCH,
    progress: bool = True,
) -> dict:
    """{"loss", "bpb", "gzip_bpb", "bz2_bpb", "xz_bpb", "bytes"} of one stream."""
    score = score_bytes(model, data, device=device, dtype=dtype, batch_size=batch_size, desc=name, progress=progress)
    raw = bytes(data) if isinstance(data, (bytes, bytearray)) else np.asarray(data).tobytes()
    return {"loss": score.loss, "bpb": score.bpb, **compressor_bpb(raw), "bytes": score.bytes}


# ---------------------------------------------------------------- a profile (the eval stage)

EVAL_STREAMS = (("wiki", "val"), ("roam", "val"), ("primer", "val"), ("wiki", "test"))
SAMPLE_PROMPTS: tuple[list[dict[str, str]], ...] = (
    [{"role": "user", "content": "hello"}],
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "What did I write about last week?"}],
    [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Tell me a story."}],
    [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "What is a byte?"},
    ],
)
SAMPLE_BYTES = 200


def eval_dir(profile: str) -> Path:
    return paths.eval_dir(profile)


def chat_samples(model: torch.nn.Module, header: str, max_new_tokens: int = SAMPLE_BYTES) -> str:
    """Greedy (temperature 0, so reproducible) replies to SAMPLE_PROMPTS, as text."""
    engine = ChatEngine(model)
    sampling = SamplingConfig(temperature=0.0, max_new_tokens=max_new_tokens)
    parts = [header]
    for messages in SAMPLE_PROMPTS:
        done = engine.reply(messages, sampling, seed=0)
        parts.append(
            f"{render_transcript(messages)}\nassistant: {done.reply}\n[{done.finish_reason}, {done.n_bytes} bytes]"
        )
    return "\n\n".join(parts) + "\n"


def evaluate_profile(
    profile: str,
    *,
    device: torch.device | None = None,
    dtype: str = "auto",
    batch_size: int = DEFAULT_BATCH,
    progress: bool = True,
) -> dict:
    """Score a profile's best checkpoint (else last) on every val stream and wiki_test;
    write artifacts/eval/<profile>/metrics.json and samples.txt; return the metrics."""
    from bytechat.model.export import load_model

    path = find_checkpoint(paths.checkpoints_dir(profile))  # validated, checksum included
    device = device or get_device()
    model, info = load_model(path, device)
    step = int(info["step"])
    amp = autocast_dtype(device, dtype)
    metrics: dict = {}
    for source, split in EVAL_STREAMS:
        stream_file = paths.stream_path(source, split)
        metrics[f"{source}_{split}"] = evaluate_bytes(
            model,
            open_stream(stream_file),
            name=stream_file.stem,
            device=device,
            dtype=amp,
            batch_size=batch_size,
            progress=progress,
        )
    metrics["step"] = step
    out = eval_dir(profile)
    header = f"# bytechat {profile}: {path.name} at step {step}, greedy replies (temperature 0)"
    samples = chat_samples(model, header)
    params = load_params()
    grounded_header = header + (", faithful-copy decoding (eval.faithful)" if params.eval.faithful else "")
    # A checkpoint from before answer_style was recorded was taught by this pipeline's params.
    style = {"answer_style": info.get("answer_style") or params.grounded.answers}
    engine = ChatEngine(model, info=style)
    if params.eval.faithful:  # how sure this model must be to refuse where notes are shown
        engine.abstain_margin = refusals.calibrated_margin(engine, params.seed)
    grounded_metrics, transcripts = evaluate_grounded(engine, params.seed, faithful=params.eval.faithful)
    metrics["chat"] = grounded_metrics
    metrics["chat_faithful"] = params.eval.faithful  # the decoding the chat figures were taken with
    metrics["chat_abstain_margin"] = engine.abstain_margin  # the export carries it (stages/export.py)
    write_text(out / "grounded_samples.txt", f"{grounded_header}\n\n{transcripts}")
    write_text(out / "samples.txt", samples)
    write_json(out / "metrics.json", metrics)
    return metrics


# ---------------------------------------------------------------- CLI


def format_table(results: Mapping[str, Mapping[str, float]]) -> str:
    header = f"{'file':<40} {'bytes':>10} {'loss':>7} {'bpb':>6} {'gzip':>6} {'bz2':>6} {'xz':>6}"
    lines = [header]
    for name, r in results.items():
        lines.append(
            f"{name[-40:]:<40} {r['bytes']:>10} {r['loss']:>7.4f} {r['bpb']:>6.3f} "
            f"{r['gzip_bpb']:>6.3f} {r['bz2_bpb']:>6.3f} {r['xz_bpb']:>6.3f}"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bytechat-eval", description="Bits per byte of a model on text files.")
    parser.add_argument("--ckpt", required=True, help="a checkpoint (.pt) or an export folder")
    parser.add_argument("files", nargs="+", type=Path, help="files to score (any bytes)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto / BYTECHAT_DEVICE)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="autocast dtype (default auto: bf16 where fast; fp32 for exact numbers)",
    )
    parser.add_argument("--batch-size", type=int, default=DEFAULT_BATCH, help="windows per forward pass")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    from bytechat.model.export import ModelLoadError, load_model

    try:
        device = get_device(args.device)
        model, _ = load_model(args.ckpt, device)
        results = {}
        for path in args.files:
            try:
                data = path.read_bytes()
            except OSError as exc:
                raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
            if len(data) < 2:
                raise ValueError(f"{path}: needs at least 2 bytes to score (has {len(data)})")
            results[str(path)] = evaluate_bytes(
                model, data, name=path.name, device=device, dtype=autocast_dtype(device, args.dtype)
            )
    except (ValueError, ModelLoadError) as exc:
        print(f"bytechat-eval: error: {exc}", file=sys.stderr)
        return 2
    print(format_table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

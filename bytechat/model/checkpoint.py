"""A model on disk: training checkpoints, and what checkpoints and exports share.

Shared with bytechat.model.export (which writes and reads export folders, and loads either):
clean_state_dict (one state_dict form on disk), saved_config / model_config_of (a saved
config read back, with the LEGACY_* values of bytechat.core.config for keys older files leave
out) and error_line (an exception as the one line the project's errors show).

Training checkpoints: one torch.save'd dict per file.

Format (version 1):

    format         "bytechat-checkpoint"
    version        1
    model          state_dict, fp32 floats, no "module." / "_orig_mod." prefixes
    model_config   dataclasses.asdict(ModelConfig)
    train_config   dataclasses.asdict(TrainConfig)
    profile        profile name
    step           optimizer steps completed
    val_loss       latest mean validation loss (None before the first eval)
    best_val_loss  val_loss of best.pt so far (None before the first eval)
    answers        the answer probe's share at this step (None outside the chat phase,
                   or with train.answer_probe 0; absent from older checkpoints)
    best_answers   answers of best.pt so far (train_step.is_better picks it)
    optimizer      optimizer.state_dict()
    rng            {"python": random.getstate(), "torch": cpu state, "cuda": [states] | None}
    sampler        the training batch generator's get_state()
    data           {"p_train", "p_chat", "chat_fraction", "seed", "streams": {name: sha256}}
    code           {path under bytechat/: sha256} of the source files the weights depend on
                   (absent from checkpoints older than it: such a resume starts fresh)
                   model_config, train_config, data and code decide whether a resume is valid
    checksum       "sha256:<hex>" over everything above (added here: torch.load does not
                   notice a flipped byte inside a tensor, only a truncated file)

Files in a run's checkpoints folder: last.pt (every checkpoint_every steps and at the
end), last.prev.pt (the last.pt before it, so a damaged last.pt falls back to it) and
best.pt (lowest validation loss at eval time). Every file is written to a temp file and
renamed, so a kill never leaves a half-written checkpoint under a real name.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import sys
from pathlib import Path
from typing import Any, Mapping

import torch

from bytechat.core.atomic import atomic_open
from bytechat.core.config import (
    LEGACY_MODEL_CONFIG,
    LEGACY_TRAIN_CONFIG,
    ConfigError,
    ModelConfig,
    TrainConfig,
    saved_model_config,
)
from bytechat.text.tokenizer import VOCAB_SIZE

FORMAT = "bytechat-checkpoint"
VERSION = 1
LAST = "last.pt"
PREVIOUS = "last.prev.pt"
BEST = "best.pt"
REQUIRED_KEYS = (
    "format",
    "version",
    "model",
    "model_config",
    "train_config",
    "profile",
    "step",
    "val_loss",
    "best_val_loss",
    "optimizer",
    "rng",
    "sampler",
    "data",
)
# Train settings that change nothing in the weights or in best.pt: a resume may differ here.
RESUME_NEUTRAL = ("log_every", "checkpoint_every")
CHECKPOINT_NAMES = (BEST, LAST, PREVIOUS)  # the order a checkpoints folder is read in
_PREFIXES = ("module.", "_orig_mod.")  # added by DistributedDataParallel and torch.compile


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read or is not a valid bytechat checkpoint."""


def warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def error_line(exc: BaseException) -> str:
    """exc as one line: "TypeName: first line of its message" (at most 200 characters of
    it), or "TypeName" when the message is empty."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


# ---------------------------------------------------------------- building a checkpoint


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The bare model under DistributedDataParallel (.module) and torch.compile (._orig_mod)."""
    while True:
        inner = getattr(model, "_orig_mod", None) or getattr(model, "module", None)
        if not isinstance(inner, torch.nn.Module):
            return model
        model = inner


def clean_state_dict(model: torch.nn.Module | Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A CPU state_dict with fp32 floating tensors and no wrapper prefixes: the form both
    checkpoints and exports hold, and the one a bare GPT loads (from a model or a dict)."""
    state = unwrap(model).state_dict() if isinstance(model, torch.nn.Module) else dict(model)
    clean = {}
    for name, tensor in state.items():
        while name.startswith(_PREFIXES):
            name = name.split(".", 1)[1]
        tensor = tensor.detach().cpu()
        clean[name] = tensor.float() if tensor.is_floating_point() else tensor
    return clean


def capture_rng() -> dict[str, Any]:
    return {
        "python": random.getstate(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
    }


def restore_rng(state: Mapping[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    torch.set_rng_state(state["torch"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def build_checkpoint(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    model_config: ModelConfig,
    train_config: TrainConfig,
    profile: str,
    step: int,
    val_loss: float | None,
    best_val_loss: float | None,
    sampler: torch.Generator,
    answers: float | None = None,
    best_answers: float | None = None,
    answer_style: str | None = None,
    data: Mapping[str, Any],
    code: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": clean_state_dict(model),
        "model_config": dataclasses.asdict(model_config),
        "train_config": dataclasses.asdict(train_config),
        "profile": profile,
        "step": int(step),
        "val_loss": None if val_loss is None else float(val_loss),
        "best_val_loss": None if best_val_loss is None else float(best_val_loss),
        "answers": None if answers is None else float(answers),
        "best_answers": None if best_answers is None else float(best_answers),
        "answer_style": answer_style,  # params.yaml grounded.answers: how its replies quote (serve/copying.py)
        "optimizer": optimizer.state_dict(),
        "rng": capture_rng(),
        "sampler": sampler.get_state(),
        "data": dict(data),
        "code": dict(code or {}),
    }


# ---------------------------------------------------------------- checksum


def _feed(digest: "hashlib._Hash", obj: Any) -> None:
    """Hash obj in a canonical walk (sorted keys; lists and tuples alike; tensors as bytes)."""
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        digest.update(f"T{t.dtype}{tuple(t.shape)}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy())
    elif isinstance(obj, Mapping):
        digest.update(b"{")
        for key in sorted(obj, key=repr):
            digest.update(repr(key).encode())
            _feed(digest, obj[key])
        digest.update(b"}")
    elif isinstance(obj, (list, tuple)):
        digest.update(b"[")
        for item in obj:
            _feed(digest, item)
        digest.update(b"]")
    else:
        digest.update(repr(obj).encode())


def checksum(ckpt: Mapping[str, Any]) -> str:
    digest = hashlib.sha256()
    _feed(digest, {k: v for k, v in ckpt.items() if k != "checksum"})
    return "sha256:" + digest.hexdigest()


# ---------------------------------------------------------------- files


def save_checkpoint(ckpt: Mapping[str, Any], path: str | Path, *, keep_previous: bool = False) -> None:
    """Write ckpt atomically (with its checksum). keep_previous: first rename an existing
    file to its .prev.pt twin (last.pt -> last.prev.pt), so a kill at any moment leaves
    at least one complete checkpoint."""
    path = Path(path)
    ckpt = dict(ckpt)
    ckpt["checksum"] = checksum(ckpt)
    if keep_previous and path.exists():
        os.replace(path, previous_path(path))
    with atomic_open(path, "wb") as fh:
        torch.save(ckpt, fh)


def previous_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and validate a checkpoint; any problem is a one-line CheckpointError naming path."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds (RuntimeError, EOFError, pickle errors)
        raise CheckpointError(f"{path}: unreadable ({error_line(exc)})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a bytechat checkpoint (format != {FORMAT!r})")
    if ckpt.get("version") != VERSION:
        raise CheckpointError(f"{path}: version {ckpt.get('version')!r} is not supported (want {VERSION})")
    missing = [key for key in REQUIRED_KEYS if key not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: missing key(s) {', '.join(missing)}")
    if "checksum" in ckpt and checksum(ckpt) != ckpt["checksum"]:
        raise CheckpointError(f"{path}: checksum mismatch (file is damaged)")
    return ckpt


def _move_aside(path: Path) -> Path:
    """Rename a damaged file to <stem>.corrupt[-N].pt: kept for inspection, and out of the
    way so the last.pt -> last.prev.pt rotation never overwrites a good file with it."""
    for n in range(1000):
        target = path.with_name(f"{path.stem}.corrupt{'' if n == 0 else f'-{n}'}{path.suffix}")
        if not target.exists():
            os.replace(path, target)
            return target
    raise CheckpointError(f"{path}: too many .corrupt files beside it")


def load_latest(directory: str | Path, *, move_damaged: bool = True) -> tuple[dict[str, Any], Path] | None:
    """The newest valid checkpoint in directory: last.pt, else last.prev.pt (with a warning).

    None when neither exists. Raises CheckpointError when files exist but none is valid.
    """
    directory = Path(directory)
    candidates = [directory / LAST, directory / PREVIOUS]
    problems = []
    for path in candidates:
        if not path.exists():
            continue
        try:
            return load_checkpoint(path), path
        except CheckpointError as exc:
            problems.append(str(exc))
            where = f"; moved to {_move_aside(path).name}" if move_damaged else ""
            warn(f"{exc}{where}; trying the previous checkpoint")
    if problems:
        raise CheckpointError(f"{directory}: no valid checkpoint ({'; '.join(problems)})")
    return None


def find_checkpoint(directory: str | Path, names: tuple[str, ...] = CHECKPOINT_NAMES) -> Path:
    """The first valid file of names in directory (best.pt, else last.pt, else last.prev.pt)."""
    directory = Path(directory)
    for name in names:
        path = directory / name
        if not path.exists():
            continue
        try:
            load_checkpoint(path)
            return path
        except CheckpointError as exc:
            warn(f"{exc}; trying the next checkpoint")
    raise CheckpointError(f"{directory}: no valid checkpoint among {', '.join(names)} (train first)")


# ---------------------------------------------------------------- saved configs

_LEGACY = {"model_config": LEGACY_MODEL_CONFIG, "train_config": LEGACY_TRAIN_CONFIG}


def saved_config(raw: Any, section: str) -> dict[str, Any]:
    """A saved config section ("model_config", "train_config", "data", ...) as a dict; a
    file from before a key was written out meant its old default (bytechat.core.config's LEGACY_*)."""
    return {**_LEGACY.get(section, {}), **dict(raw or {})}


def model_config_of(raw: Any, where: str) -> ModelConfig:
    """The ModelConfig of a checkpoint or export (strictly; LEGACY_MODEL_CONFIG fills the
    keys older files leave out). A bad one is a CheckpointError naming where."""
    try:
        cfg = saved_model_config(raw)
    except ConfigError as exc:
        raise CheckpointError(f"{where}: {exc}") from None
    if cfg.vocab_size != VOCAB_SIZE:  # it would load, then fail every reply
        raise CheckpointError(
            f"{where}: model_config.vocab_size is {cfg.vocab_size}; bytechat models read bytes and need {VOCAB_SIZE}"
        )
    return cfg


# ---------------------------------------------------------------- resume decisions


def differences(
    ckpt: Mapping[str, Any],
    model_config: ModelConfig,
    train_config: TrainConfig,
    data: Mapping[str, Any],
    code: Mapping[str, str] | None = None,
) -> list[str]:
    """What differs between a checkpoint and the current run (empty: the resume is valid),
    e.g. ["train_config.lr: 0.002 -> 0.001", "data.streams.roam_train: '9104b3ca072b71...fdd0' -> ...",
    "code.model/blocks.py: '5be1c0f2e3a4d1...9a0c1' -> ..."]. code None: the code is not compared."""
    current = {
        "model_config": dataclasses.asdict(model_config),
        "train_config": {k: v for k, v in dataclasses.asdict(train_config).items() if k not in RESUME_NEUTRAL},
        "data": dict(data),
    }
    if code is not None:
        current["code"] = dict(code)
    diffs: list[str] = []
    for section, now in current.items():
        saved = saved_config(ckpt.get(section), section)
        if section == "train_config":
            saved = {k: v for k, v in saved.items() if k not in RESUME_NEUTRAL}
        diffs += compare(saved, now, section)
    return diffs


def compare(saved: Any, now: Any, key: str) -> list[str]:
    """Every leaf where two nested mappings differ, as "key.path: old -> new" (shortened)."""
    if not (isinstance(saved, Mapping) and isinstance(now, Mapping)):
        return [] if saved == now else [f"{key}: {_short(saved)} -> {_short(now)}"]
    out = []
    for name in sorted(set(saved) | set(now), key=str):
        out += compare(saved.get(name, "<absent>"), now.get(name, "<absent>"), f"{key}.{name}")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:15] + "..." + text[-5:]


def move_stale(directory: str | Path, step: int) -> Path | None:
    """Move a run's checkpoints out of the way into <run dir>/stale-<step>[-N]/ (nothing is
    deleted; the folder lies outside the dvc-tracked checkpoints folder)."""
    directory = Path(directory)
    files = [p for p in sorted(directory.glob("*.pt")) if p.is_file()]
    if not files:
        return None
    for n in range(1000):
        target = directory.parent / f"stale-{step}{'' if n == 0 else f'-{n}'}"
        if not target.exists():
            break
    target.mkdir(parents=True)
    for path in files:
        os.replace(path, target / path.name)
    return target

"""Export training checkpoints for inference, and load any model artifact.

Training checkpoint (written by training): a torch.save'd dict with
    format="bytechat-checkpoint", version=1, model (fp32 state_dict), model_config,
    train_config, profile, step, val_loss, best_val_loss, optimizer, rng, sampler, data
kept as artifacts/runs/<profile>/checkpoints/{last,best}.pt.

Export (written here): a folder, e.g. artifacts/export/<profile>/, with
    model.safetensors  the fp32 weights, nothing else (no pickle: safe to load anywhere)
    config.json        {"format": "bytechat-export", "version": 1, "model_config", "profile",
                        "step", "val_loss", "best_val_loss", "params", "source_checkpoint"}
No timestamps: exporting the same checkpoint twice gives byte-identical files.

    python -m bytechat.export CKPT OUT_DIR     export a checkpoint (.pt or checkpoints folder)
    python -m bytechat.export --summary NAME   where the exported model is and how to use it
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save as safetensors_bytes

from bytechat import atomic, paths
from bytechat.checkpoint import CheckpointError, load_checkpoint
from bytechat.config import ConfigError, ModelConfig, saved_model_config, to_dict
from bytechat.device import get_device
from bytechat.model import GPT
from bytechat.tokenizer import VOCAB_SIZE

EXPORT_FORMAT = "bytechat-export"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # added by DDP and torch.compile


class ModelLoadError(Exception):
    """A model path that is missing, unreadable, corrupt or not a bytechat model (one line)."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:200]}" if text else type(exc).__name__


def _display(path: Path) -> str:
    """path relative to the repository root when inside it (stable across machines)."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(paths.ROOT))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- reading


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint dict (tensors on the CPU), validated by bytechat.checkpoint:
    weights_only unpickling, format, version, required keys and checksum."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:  # already one line naming the path
        raise ModelLoadError(str(exc)) from None
    for key in ("model", "model_config"):
        if not isinstance(ckpt.get(key), dict):
            raise ModelLoadError(f"{path}: checkpoint has no {key!r} dict")
    return ckpt


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop the "module." / "_orig_mod." prefixes that DDP and torch.compile add."""
    cleaned = {}
    for key, value in state.items():
        while key.startswith(WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def _model_config(raw: Any, where: str) -> ModelConfig:
    try:
        cfg = saved_model_config(raw)  # older exports may leave keys out: LEGACY_MODEL_CONFIG
    except ConfigError as exc:
        raise ModelLoadError(f"{where}: {exc}") from None
    if cfg.vocab_size != VOCAB_SIZE:  # it would load, then fail every reply
        raise ModelLoadError(
            f"{where}: model_config.vocab_size is {cfg.vocab_size}; bytechat models read bytes and need {VOCAB_SIZE}"
        )
    return cfg


def _build(cfg: ModelConfig, state: dict[str, torch.Tensor], where: str) -> GPT:
    model = GPT(cfg)
    try:
        model.load_state_dict(clean_state_dict(state), strict=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches
        detail = " ".join(str(exc).split())[:300]
        raise ModelLoadError(f"{where}: weights do not fit the model_config ({detail})") from None
    return model


def _read_export_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable export config ({_first_line(exc)})") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise ModelLoadError(f"{path}: not a bytechat export config (format is not {EXPORT_FORMAT!r})")
    if config.get("version") != FORMAT_VERSION:
        version = config.get("version")
        raise ModelLoadError(f"{path}: export version {version!r} is not supported (need {FORMAT_VERSION})")
    return config


def _load_export(folder: Path) -> tuple[GPT, dict[str, Any]]:
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file():
        raise ModelLoadError(f"{config_path}: missing (not an export folder)")
    config = _read_export_config(config_path)
    cfg = _model_config(config.get("model_config"), str(config_path))
    if not weights_path.is_file():
        raise ModelLoadError(f"{weights_path}: missing")
    try:
        state = load_safetensors(weights_path, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelLoadError(f"{weights_path}: unreadable safetensors file ({_first_line(exc)})") from None
    model = _build(cfg, state, str(weights_path))
    fields = ("profile", "step", "val_loss", "best_val_loss", "source_checkpoint")
    return model, {"path": str(folder), "kind": "export", **{k: config.get(k) for k in fields}}


def _load_checkpoint(path: Path) -> tuple[GPT, dict[str, Any]]:
    ckpt = read_checkpoint(path)
    model = _build(_model_config(ckpt["model_config"], str(path)), ckpt["model"], str(path))
    fields = ("profile", "step", "val_loss", "best_val_loss")
    return model, {"path": str(path), "kind": "checkpoint", **{k: _plain(ckpt.get(k)) for k in fields}}


def _plain(value: Any) -> Any:
    """JSON-friendly: one-element tensors become numbers."""
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def resolve_model_path(path: str | Path) -> tuple[str, Path]:
    """("export", folder) or ("checkpoint", .pt file) for any path load_model accepts."""
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"{path}: no such file or folder")
    if path.is_dir():
        if (path / CONFIG_FILE).is_file():
            return "export", path
        for name in ("best.pt", "last.pt", "last.prev.pt"):
            if (path / name).is_file():
                return "checkpoint", path / name
        if (path / "checkpoints").is_dir():  # a run folder: artifacts/runs/<profile>
            return resolve_model_path(path / "checkpoints")
        raise ModelLoadError(f"{path}: folder has neither {CONFIG_FILE} (an export) nor best.pt/last.pt (checkpoints)")
    if path.name == CONFIG_FILE or path.suffix == ".safetensors":
        return "export", path.parent
    if path.suffix == ".pt":
        return "checkpoint", path
    raise ModelLoadError(
        f"{path}: not a model (expected an export folder, its {CONFIG_FILE} or {WEIGHTS_FILE}, a .pt checkpoint"
        " or a checkpoints folder)"
    )


def load_model(path: str | Path, device: torch.device | str | None = None) -> tuple[GPT, dict[str, Any]]:
    """(model in eval mode on device, info) from an export folder, its config.json or
    model.safetensors, a training checkpoint .pt, or a checkpoints folder (best.pt, else
    last.pt, else last.prev.pt). Raises ModelLoadError with one line naming the path and the problem."""
    kind, target = resolve_model_path(path)
    model, info = _load_export(target) if kind == "export" else _load_checkpoint(target)
    device = device if isinstance(device, torch.device) else get_device(device)
    model = model.to(device).eval()
    info.update(params=model.num_params(), model_config=to_dict(model.config), device=str(device))
    return model, info


def newest_export(export_root: Path | None = None) -> Path | None:
    """The export folder whose config.json was written last, or None.

    Hidden folders (an export being written, or one being replaced) never count; an
    export whose replacement was killed between its two renames is put back first.
    """
    root = export_root if export_root is not None else paths.ARTIFACTS / "export"
    if root.is_dir():
        for old in root.glob(".*" + _OLD_MARK + "*"):
            match = _OLD_NAME.match(old.name)
            if match:
                recover_swap(root / match.group(1))
    configs = [p for p in root.glob(f"*/{CONFIG_FILE}") if p.is_file() and not p.parent.name.startswith(".")]
    return max(configs, key=lambda p: p.stat().st_mtime).parent if configs else None


# ---------------------------------------------------------------- writing


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path) -> Path:
    """Write ckpt_path's model as an export folder at out_dir (replaced atomically)."""
    kind, source = resolve_model_path(ckpt_path)
    if kind != "checkpoint":
        raise ModelLoadError(f"{ckpt_path}: is an export already, not a training checkpoint")
    ckpt = read_checkpoint(source)
    model = _build(_model_config(ckpt["model_config"], str(source)), ckpt["model"], str(source))
    # The output layer is tied to wte.weight by using that one tensor (no lm_head
    # parameter), so the state_dict holds every tensor once, as safetensors requires.
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()}
    config = {
        "format": EXPORT_FORMAT,
        "version": FORMAT_VERSION,
        "model_config": to_dict(model.config),
        "profile": ckpt.get("profile"),
        "step": _plain(ckpt.get("step")),
        "val_loss": _plain(ckpt.get("val_loss")),
        "best_val_loss": _plain(ckpt.get("best_val_loss")),
        "params": model.num_params(),
        "source_checkpoint": _display(source),
    }
    out_dir = Path(out_dir)
    weights = safetensors_bytes(tensors, metadata={"format": "pt"})
    _replace_folder(out_dir, {WEIGHTS_FILE: weights}, {CONFIG_FILE: config})
    return out_dir


# Beside out_dir while it is replaced: ".<name>.<pid>.<random>.tmp" (the new export being
# written) and ".<name>.old-<pid>" (the previous export, between the two renames).
_OLD_MARK = ".old-"
_OLD_NAME = re.compile(r"^\.(.+)\.old-(\d+)$")
_TMP_NAME = re.compile(r"^\.(.+)\.(\d+)\.[^.]+\.tmp$")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def recover_swap(out_dir: Path) -> None:
    """Undo what a killed _replace_folder left beside out_dir: put the previous export
    back if out_dir is missing, and remove the temp folders of dead writers."""
    out_dir = Path(out_dir)
    olds, tmps = [], []
    for path in out_dir.parent.glob(f".{glob.escape(out_dir.name)}.*"):
        for pattern, found in ((_OLD_NAME, olds), (_TMP_NAME, tmps)):
            match = pattern.match(path.name)
            if match and match.group(1) == out_dir.name and not _alive(int(match.group(2))):
                found.append(path)
    olds.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    if olds and not out_dir.exists():
        os.replace(olds.pop(0), out_dir)
        print(f"export: {_display(out_dir)}: restored the previous export (a replacement was interrupted)", file=sys.stderr)
    for path in olds + tmps:
        shutil.rmtree(path, ignore_errors=True)


def _replace_folder(out_dir: Path, binary: dict[str, bytes], json_files: dict[str, Any]) -> None:
    """Fill a hidden temp folder beside out_dir, then swap it in with two renames, so
    readers see the old export or the new one, never a half-written mix. If the swap
    fails, the previous export is renamed back; if it is killed between the renames,
    recover_swap (run by the next export and by newest_export) puts it back."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelLoadError(f"{out_dir}: exists and is not a folder")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    recover_swap(out_dir)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.{os.getpid()}.", suffix=".tmp", dir=out_dir.parent))
    old = out_dir.with_name(f".{out_dir.name}{_OLD_MARK}{os.getpid()}")
    moved = False
    try:
        os.chmod(tmp, 0o755)  # mkdtemp makes it private
        for name, data in binary.items():
            with atomic.atomic_open(tmp / name, "wb") as fh:
                fh.write(data)
        for name, obj in json_files.items():
            atomic.write_json(tmp / name, obj)
        if out_dir.exists():
            shutil.rmtree(old, ignore_errors=True)  # this process's own leftover, if any
            os.replace(out_dir, old)
            moved = True
        os.replace(tmp, out_dir)
    except BaseException:
        if moved and not out_dir.exists():
            os.replace(old, out_dir)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if moved:
        shutil.rmtree(old, ignore_errors=True)


# ---------------------------------------------------------------- command line


def summary(profile: str) -> str:
    """Where profile's export is, what it is, and the commands to use it."""
    folder = paths.export_dir(profile)
    if not (folder / CONFIG_FILE).is_file():
        raise ModelLoadError(f"{_display(folder)}: no export for profile {profile!r}; run `make smoke` first")
    config = _read_export_config(folder / CONFIG_FILE)
    cfg = _model_config(config.get("model_config"), str(folder / CONFIG_FILE))
    weights = folder / WEIGHTS_FILE
    size = f"{weights.stat().st_size / 1e6:.1f} MB" if weights.is_file() else "weights missing!"
    params = config.get("params")
    where = _display(folder)
    val_loss = config.get("val_loss")
    if isinstance(val_loss, (int, float)) and math.isfinite(val_loss):
        quality = f"val loss {val_loss:.4f} nats/byte = {val_loss / math.log(2):.3f} bits/byte"
    else:
        quality = "val loss unknown"
    return "\n".join(
        [
            f"exported model: {where}/ ({WEIGHTS_FILE}, {CONFIG_FILE})",
            f"  {params:,} parameters, {size}, {cfg.n_layer} layers x {cfg.n_embd} wide, {cfg.block_size}-byte context"
            if isinstance(params, int)
            else f"  {size}, {cfg.n_layer} layers x {cfg.n_embd} wide, {cfg.block_size}-byte context",
            f"  profile {config.get('profile')}, step {config.get('step')}, {quality}",
            "chat in the terminal:",
            f"  make chat CKPT={where}",
            "serve the web chat (then open http://127.0.0.1:8000):",
            f"  make serve CKPT={where}",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bytechat.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", nargs="?", help="training checkpoint .pt (or a checkpoints folder)")
    parser.add_argument("out_dir", nargs="?", help="export folder to write (replaced if present)")
    parser.add_argument("--summary", metavar="PROFILE", help="describe PROFILE's export and how to chat with it")
    args = parser.parse_args(argv)
    try:
        if args.summary:
            print(summary(args.summary))
            return 0
        if not (args.ckpt and args.out_dir):
            parser.error("give CKPT and OUT_DIR, or --summary PROFILE")
        out = export_checkpoint(args.ckpt, args.out_dir)
        print(f"exported {args.ckpt} -> {out}")
        return 0
    except (ModelLoadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

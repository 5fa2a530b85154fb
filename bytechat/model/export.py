"""Exports: a model folder for inference, and load_model for any model artifact.

Training checkpoints (format, save, load: bytechat.model.checkpoint) are kept as
artifacts/runs/<profile>/checkpoints/{best,last,last.prev}.pt.

Export (written here): a folder, e.g. artifacts/export/<profile>/, with
    model.safetensors  the fp32 weights, nothing else (no pickle: safe to load anywhere)
    config.json        {"format": "bytechat-export", "version": 1, "model_config", "profile",
                        "step", "val_loss", "best_val_loss", "params", "source_checkpoint"}
No timestamps: exporting the same checkpoint twice gives byte-identical files.
Both kinds hold the state_dict of checkpoint.clean_state_dict and read their model_config
with checkpoint.model_config_of.

    python -m bytechat.model.export CKPT OUT_DIR     export a checkpoint (.pt or checkpoints folder)
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, get_args

import torch
from safetensors.torch import load_file as load_safetensors
from safetensors.torch import save as safetensors_bytes

from bytechat.core import atomic
from bytechat.core import paths
from bytechat.model.checkpoint import (
    CHECKPOINT_NAMES,
    CheckpointError,
    clean_state_dict,
    error_line,
    load_checkpoint,
    model_config_of,
)
from bytechat.core.config import AnswerStyle, ModelConfig, to_dict
from bytechat.core.device import get_device
from bytechat.model import GPT

EXPORT_FORMAT = "bytechat-export"
FORMAT_VERSION = 1
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"


class ModelLoadError(Exception):
    """A model path that is missing, unreadable, corrupt or not a bytechat model (one line)."""


def display_path(path: Path) -> str:
    """path relative to the repository root when inside it (stable across machines)."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(paths.root()))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------- reading


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """A training checkpoint dict (tensors on the CPU), validated by bytechat.model.checkpoint:
    weights_only unpickling, format, version, required keys and checksum."""
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:  # already one line naming the path
        raise ModelLoadError(str(exc)) from None
    for key in ("model", "model_config"):
        if not isinstance(ckpt.get(key), dict):
            raise ModelLoadError(f"{path}: checkpoint has no {key!r} dict")
    return ckpt


def _model_config(raw: Any, where: str) -> ModelConfig:
    try:
        return model_config_of(raw, where)
    except CheckpointError as exc:  # already one line naming where
        raise ModelLoadError(str(exc)) from None


def _build(cfg: ModelConfig, state: dict[str, torch.Tensor], where: str) -> GPT:
    model = GPT(cfg)
    try:
        model.load_state_dict(clean_state_dict(state), strict=True)
    except RuntimeError as exc:  # missing/unexpected keys or shape mismatches
        detail = " ".join(str(exc).split())[:300]
        raise ModelLoadError(f"{where}: weights do not fit the model_config ({detail})") from None
    return model


def read_export_config(path: Path) -> tuple[dict[str, Any], ModelConfig]:
    """An export's config.json, validated (format, version, model_config), and its ModelConfig."""
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"{path}: unreadable export config ({error_line(exc)})") from None
    if not isinstance(config, dict) or config.get("format") != EXPORT_FORMAT:
        raise ModelLoadError(f"{path}: not a bytechat export config (format is not {EXPORT_FORMAT!r})")
    if config.get("version") != FORMAT_VERSION:
        version = config.get("version")
        raise ModelLoadError(f"{path}: export version {version!r} is not supported (need {FORMAT_VERSION})")
    _check_answer_style(config, path)
    _check_abstain_margin(config.get("abstain_margin"), path)
    return config, _model_config(config.get("model_config"), str(path))


def _load_export(folder: Path) -> tuple[GPT, dict[str, Any]]:
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file():
        raise ModelLoadError(f"{config_path}: missing (not an export folder)")
    config, cfg = read_export_config(config_path)
    if not weights_path.is_file():
        raise ModelLoadError(f"{weights_path}: missing")
    try:
        state = load_safetensors(weights_path, device="cpu")
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise ModelLoadError(f"{weights_path}: unreadable safetensors file ({error_line(exc)})") from None
    model = _build(cfg, state, str(weights_path))
    fields = ("profile", "step", "val_loss", "best_val_loss", "answer_style", "abstain_margin", "source_checkpoint")
    return model, {"path": str(folder), "kind": "export", **{k: config.get(k) for k in fields}}


def _load_checkpoint(path: Path) -> tuple[GPT, dict[str, Any]]:
    ckpt = read_checkpoint(path)
    _check_answer_style(ckpt, path)
    model = _build(_model_config(ckpt["model_config"], str(path)), ckpt["model"], str(path))
    fields = ("profile", "step", "val_loss", "best_val_loss", "answer_style")
    return model, {"path": str(path), "kind": "checkpoint", **{k: _plain(ckpt.get(k)) for k in fields}}


def _check_answer_style(saved: dict[str, Any], path: Path) -> None:
    """A saved answer_style decides how replies are decoded (serve/copying.py): one this
    code does not know is refused, not read as a quote model's."""
    style = saved.get("answer_style")
    if style is not None and style not in get_args(AnswerStyle):
        known = ", ".join(get_args(AnswerStyle))
        raise ModelLoadError(f"{path}: answer_style {style!r} is not one of {known} (or absent)")


def _check_abstain_margin(margin: Any, path: Path | str) -> None:
    """An export's abstain_margin (bytechat/eval/refusals.py) is None or nats >= 0."""
    ok = margin is None or (isinstance(margin, (int, float)) and not isinstance(margin, bool) and 0 <= margin < 1e9)
    if not ok:
        raise ModelLoadError(f"{path}: abstain_margin {margin!r} is not a number of nats >= 0 (or absent)")


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
        for name in CHECKPOINT_NAMES:
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
    root = export_root if export_root is not None else paths.export_root()
    if root.is_dir():
        for old in root.glob(".*" + _OLD_MARK + "*"):
            match = _OLD_NAME.match(old.name)
            if match:
                recover_swap(root / match.group(1))
    configs = [p for p in root.glob(f"*/{CONFIG_FILE}") if p.is_file() and not p.parent.name.startswith(".")]
    return max(configs, key=lambda p: p.stat().st_mtime).parent if configs else None


# ---------------------------------------------------------------- writing


def export_checkpoint(ckpt_path: str | Path, out_dir: str | Path, abstain_margin: float | None = None) -> Path:
    """Write ckpt_path's model as an export folder at out_dir (replaced atomically), with
    abstain_margin (how sure it must be to refuse where notes are shown) in its config."""
    _check_abstain_margin(abstain_margin, out_dir)
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
        "answer_style": ckpt.get("answer_style"),
        "abstain_margin": abstain_margin,  # calibrated by the eval stage (bytechat/eval/refusals.py); None: the default
        "params": model.num_params(),
        "source_checkpoint": display_path(source),
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
        print(
            f"export: {display_path(out_dir)}: restored the previous export (a replacement was interrupted)",
            file=sys.stderr,
        )
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bytechat.model.export", description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", help="training checkpoint .pt (or a checkpoints folder)")
    parser.add_argument("out_dir", help="export folder to write (replaced if present)")
    args = parser.parse_args(argv)
    try:
        out = export_checkpoint(args.ckpt, args.out_dir)
        print(f"exported {args.ckpt} -> {out}")
        return 0
    except (ModelLoadError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

"""Device selection: cuda if available, else mps, else cpu.

Force a device with the `device` argument or the BYTECHAT_DEVICE environment variable
(`cpu`, `cuda`, `cuda:1`, `mps`).
"""

from __future__ import annotations

import os

import torch

ENV_VAR = "BYTECHAT_DEVICE"


def get_device(force: str | None = None) -> torch.device:
    choice = force or os.environ.get(ENV_VAR) or "auto"
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(choice)
    except RuntimeError as exc:
        raise ValueError(f"{ENV_VAR}/device: {choice!r} is not a device ({exc})") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{ENV_VAR}/device: {choice!r} requested but CUDA is not available")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{ENV_VAR}/device: {choice!r} requested but MPS is not available")
    return device


def cpu_has_bf16() -> bool:
    """True when the CPU runs bf16 matmuls natively (avx512_bf16 or AMX).

    Without it bf16 autocast on CPU is emulated and slower than fp32.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as fh:
            flags = fh.read()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_dtype(device: torch.device, requested: str = "auto") -> torch.dtype | None:
    """The autocast dtype for a device: bf16 where the hardware runs it fast, else None (fp32).

    fp16 is never chosen on CPU: measured ~100x slower than fp32 there.
    """
    if requested == "fp32":
        return None
    if requested not in ("auto", "bf16"):
        raise ValueError(f"dtype: {requested!r} is not one of auto, bf16, fp32")
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    if device.type == "cpu":
        return torch.bfloat16 if (requested == "bf16" or cpu_has_bf16()) else None
    if device.type == "mps":
        return torch.bfloat16 if requested == "bf16" else None
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


if __name__ == "__main__":
    print(get_device())

"""Seeding. Global RNGs are seeded once per process; code that samples takes an explicit
torch.Generator so that its stream of numbers does not depend on who else drew from the
global one."""

from __future__ import annotations

import random
import sys

import torch


def set_seed(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA/MPS device
    if "numpy" in sys.modules:  # only where numpy is in use already
        import numpy as np

        np.random.seed(seed % 2**32)


def make_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed)
    return gen

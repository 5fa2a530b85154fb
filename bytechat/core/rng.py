"""Seeding. Global RNGs are seeded once per process; code that samples takes an explicit
torch.Generator so that its stream of numbers does not depend on who else drew from the
global one. Each purpose that draws from the run's seed has its own stream, seed +
SeedOffset.<purpose>: the offsets live here, so a new purpose picks a number no other uses."""

from __future__ import annotations

import enum
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


@enum.unique
class SeedOffset(enum.IntEnum):
    """What each purpose adds to params.yaml's seed for an RNG of its own (seed + offset).
    Fixed values: changing one changes the data, the runs and their metrics (dvc.lock)."""

    EVAL_BATCHES = 1  # the fixed validation batches (bytechat/train/data.py), apart from the training sampler
    GROUNDED_ROAM_TRAIN = 11  # stage grounded: dialogues about the roam train pages
    GROUNDED_SYNTHETIC = 12  # stage grounded: the synthetic pages and their dialogues
    GROUNDED_ROAM_VAL = 13  # stage grounded: dialogues about the roam validation pages
    HELDOUT_TRAIN = 21  # the eval's held-out questions about train pages (bytechat/eval/grounded.py)
    HELDOUT_VAL = 22  # the eval's held-out questions about validation pages
    REFUSAL_CALIBRATION = 23  # the eval's margin calibration: other held-out questions about train pages
    HELDOUT_FOLLOWUPS = 24  # the eval's held-out follow-ups about train and validation pages
    REFUSAL_FOLLOWUPS = 25  # the margin calibration's follow-ups about train pages
    ANSWER_PROBE = 40  # the answer probe's questions (bytechat/eval/answer_probe.py; its uncovered ones: + 1)

"""Several training processes: who this process is (Dist), the process group, and the
collectives the Trainer needs (mean of a loss, rank 0's object, agreement on inputs).

`torchrun --nproc_per_node=N stages/train.py --profile P` trains with
DistributedDataParallel (nccl on GPUs, gloo on CPU), on one machine or several (torchrun's
--nnodes / --rdzv-* flags); see bytechat.train.trainer and docs/ddp.md. A rank that dies takes the
run down: torchrun stops the other workers and exits non-zero, and collectives time out
after BYTECHAT_DIST_TIMEOUT_S (default 300) should a peer hang instead of dying.
"""

from __future__ import annotations

import datetime
import math
import os
from dataclasses import dataclass
from typing import Mapping

import torch

from bytechat.model import checkpoint as ckpt_io
from bytechat.core.config import ConfigError

TIMEOUT_ENV = "BYTECHAT_DIST_TIMEOUT_S"
# Long enough for what one rank does while the others wait at the next collective (rank 0
# writing a checkpoint, a slow first compile), short enough that a hung peer ends the run.
DEFAULT_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class Dist:
    """Who this process is: rank 0 of 1, or one of the processes torchrun started
    (RANK / WORLD_SIZE / LOCAL_RANK in the environment).

    Everything rank-dependent goes through here: batch slicing (get_batch's rank and
    world_size: every rank draws the global batch and keeps its rows, so the data of a
    step does not depend on the world size), who writes files and logs (is_main), and
    averaging losses over ranks.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls) -> "Dist":
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
            rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        except ValueError:
            raise ConfigError("RANK/WORLD_SIZE/LOCAL_RANK: must be integers (set by torchrun)") from None
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    def device(self, device: torch.device) -> torch.device:
        """One GPU per process (cuda:LOCAL_RANK); CPU processes share the CPU."""
        if self.enabled and device.type == "cuda":
            device = torch.device("cuda", self.local_rank)
            torch.cuda.set_device(device)
        return device

    def start(self, device: torch.device) -> None:
        if self.enabled and not torch.distributed.is_initialized():
            backend = "nccl" if device.type == "cuda" else "gloo"
            torch.distributed.init_process_group(
                backend=backend, rank=self.rank, world_size=self.world_size, timeout=collective_timeout()
            )

    def stop(self, *, finished: bool = False) -> None:
        """Leave the process group. After a finished run, every rank first waits for the others
        (a barrier): a rank that tears down gloo while a peer's last collective is still in flight
        can abort with "terminate called without an active exception". After an error there is
        no barrier, since a failed peer would never reach it."""
        if self.enabled and torch.distributed.is_initialized():
            if finished:
                torch.distributed.barrier()
            torch.distributed.destroy_process_group()

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of value over ranks (a collective: every rank must call it)."""
        if not self.enabled:
            return value
        total = value.detach().clone()
        torch.distributed.all_reduce(total)  # SUM: gloo has no AVG
        return total / self.world_size

    def from_main(self, obj):
        """Rank 0's obj on every rank (a collective)."""
        if not self.enabled:
            return obj
        box = [obj]
        torch.distributed.broadcast_object_list(box, src=0)
        return box[0]

    def agree(self, value: Mapping, what: str) -> None:
        """Raise the same ConfigError on every rank unless every rank's value equals rank 0's
        (a collective): on several machines, each one has its own copy of the inputs."""
        if not self.enabled:
            return
        values = [None] * self.world_size
        torch.distributed.all_gather_object(values, dict(value))
        for rank, other in enumerate(values[1:], start=1):
            if diffs := ckpt_io.compare(values[0], other, what):
                raise ConfigError(
                    f"rank {rank}: {what} differs from rank 0's ({'; '.join(diffs[:3])}); "
                    f"every machine needs the same artifacts/streams and bytechat code"
                )

    def wrap(self, model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
        if not self.enabled:
            return model
        from torch.nn.parallel import DistributedDataParallel

        return DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)


def collective_timeout() -> datetime.timedelta:
    """How long a collective waits for a silent peer before the run fails."""
    raw = os.environ.get(TIMEOUT_ENV, str(DEFAULT_TIMEOUT_S))
    try:
        seconds = float(raw)
    except ValueError:
        seconds = -1.0
    if not (seconds > 0 and math.isfinite(seconds)):
        raise ConfigError(f"{TIMEOUT_ENV}: expected seconds > 0 such as 300, got {raw!r}")
    return datetime.timedelta(seconds=seconds)


def lost_peer(exc: BaseException) -> bool:
    """Whether exc is a collective failing because another rank died or hung: nccl and
    the stores raise DistError; gloo a RuntimeError naming its own source file."""
    return isinstance(exc, torch.distributed.DistError) or "gloo" in str(exc)

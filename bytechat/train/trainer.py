"""Train one profile of params.yaml: `python -m bytechat.train.trainer --profile smoke [--steps N]`.

What a run does, in order:
  * opens the train and val byte streams (memmaps under paths.streams_dir());
  * resumes from artifacts/runs/<profile>/checkpoints/last.pt when that checkpoint was made
    with the same model config, train config (log_every/checkpoint_every aside), seed,
    p_train, p_chat, stream contents and training code (sha256 of the source files listed
    in CODE_FILES: the train stage's code deps in dvc.yaml); otherwise moves the old
    checkpoints into artifacts/runs/<profile>/stale-<step>/ (loudly; nothing is deleted)
    and starts fresh;
  * trains with AdamW or Muon + AdamW (decay on matrices only), warmup + cosine lr, gradient accumulation,
    gradient clipping and bf16 autocast where the hardware runs it fast (fp32 weights);
  * draws batches by p_train, except in the chat phase, the last train.chat_fraction of
    the steps, which draws by p_chat (dialogue-heavy: a small model learns turn-taking
    there, like nanochat's mid-training on conversations); the phase is a function of
    the step (lr_schedule.phase_at), logged as the dvclive metric and param `phase`;
  * evaluates every eval_every steps and at the end on fixed batches of each val stream
    (val/loss: half language, half chat; train_step.selection_loss) and, in the chat
    phase, asks the answer probe's note questions (bytechat.eval.answer_probe); best.pt goes
    by right answers first, then val/loss (train_step.is_better);
  * writes last.pt every checkpoint_every steps and at the end, best.pt at each new best
    evaluation, and dvclive metrics + plots under artifacts/runs/<profile>/live/.

Exact resume: a run killed at any moment and started again ends with the same weights,
bit for bit on CPU, as a run that was never stopped. That holds because everything a step
depends on is either a function of the step (the lr), or restored from the checkpoint
(weights, AdamW moments, global RNG states, the batch generator's state), or drawn from
its own generator (the eval batches); checkpoints are taken only between optimizer steps.

Several processes: `torchrun --nproc_per_node=N stages/train.py --profile P` trains with
DistributedDataParallel (nccl on GPUs, gloo on CPU), on one machine or several (torchrun's
--nnodes / --rdzv-* flags). batch_size stays the global batch: each rank takes its slice
of the rows every rank draws alike, so the data of a step does not depend on N, and a run
resumes under any N. Rank 0 alone reads and writes checkpoints (it sends the one it
resumes from to the others), metrics and the progress bar; every rank checks at start
that its streams and code match rank 0's (bytechat.train.distributed; docs/ddp.md).

Around the loop: bytechat.train.data (streams, fingerprint, validation batches),
bytechat.train.log (progress bar, dvclive, bytes/s and MFU), bytechat.model.checkpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from bytechat.model import checkpoint as ckpt_io
from bytechat.core import paths
from bytechat.eval.answer_probe import AnswerProbe, ProbeError
from bytechat.data.batching import BatchError, get_batch
from bytechat.core.config import ConfigError, Params, Profile, load_params
from bytechat.core.device import autocast_dtype, get_device
from bytechat.train.distributed import Dist, lost_peer
from bytechat.train.schedule import CHAT, chat_start, lr_at, phase_at
from bytechat.core.rng import make_generator, set_seed
from bytechat.train.log import RunLogger, Speedometer, measure_peak_flops
from bytechat.data.streams import StreamError
from bytechat.train.data import eval_batches, open_data
from bytechat.train.step import build_optimizer, is_better, optimizer_step, selection_loss, validation_losses

# The source a run's weights depend on, under bytechat/: the train stage's code deps in
# dvc.yaml (tests/test_train.py keeps the two lists in step). An edit starts a fresh run.
CODE_FILES = (
    "model/*.py",
    "train/*.py",
    "data/batching.py",
    "core/device.py",
    "core/rng.py",
    "eval/answer_probe.py",
)
PACKAGE_DIR = Path(__file__).resolve().parents[1]


def code_fingerprint(package_dir: Path = PACKAGE_DIR) -> dict[str, str]:
    """sha256 of each file of CODE_FILES, by its path under package_dir."""
    found = {path for pattern in CODE_FILES for path in package_dir.glob(pattern) if path.is_file()}
    return {
        path.relative_to(package_dir).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(found)
    }


# ---------------------------------------------------------------- the run


@dataclass
class RunState:
    step: int = 0  # optimizer steps completed
    val_loss: float | None = None
    best_val_loss: float | None = None
    val_losses: dict[str, float] = field(default_factory=dict)
    train_loss: float | None = None
    answers: float | None = None  # the answer probe's share (chat-phase evaluations only)
    best_answers: float | None = None


@dataclass
class TrainResult:
    profile: str
    step: int
    train_loss: float | None
    val_loss: float | None
    best_val_loss: float | None
    val_losses: dict[str, float]
    resumed_from: int | None
    seconds: float
    checkpoint: Path


class Trainer:
    """One profile's run on this process: every piece of it is built here (streams, model,
    optimizer, sampler, and the checkpoint it resumes from, if any); run() trains."""

    def __init__(
        self,
        params: Params,
        profile: Profile,
        *,
        device: torch.device | None = None,
        dist: Dist | None = None,
        quiet: bool = False,
    ) -> None:
        self.started = time.perf_counter()
        self.params, self.profile = params, profile
        self.mcfg, self.tcfg = profile.model, profile.train
        self.dist = dist or Dist()
        self.device = device or get_device()
        self.amp = autocast_dtype(self.device, self.tcfg.dtype)
        self.ckpt_dir = paths.checkpoints_dir(profile.name)
        self.log = RunLogger(
            profile.name, self.tcfg.steps, paths.run_dir(profile.name) / "live", main=self.dist.is_main, quiet=quiet
        )
        micro = self.tcfg.batch_size // self.tcfg.grad_accum
        if micro % self.dist.world_size:
            raise ConfigError(
                f"profiles.{profile.name}.train.batch_size: {self.tcfg.batch_size} / grad_accum "
                f"{self.tcfg.grad_accum} = {micro} rows is not divisible by {self.dist.world_size} ranks"
            )
        self.micro_rows = micro  # rows per micro-step over all ranks
        # No torch.use_deterministic_algorithms: the CPU kernels this model uses are
        # deterministic for a fixed thread count already (tests/test_resume.py checks it
        # bit for bit), and the call costs ~1.4 s of imports (torch._dynamo) per start.
        self.data = open_data(self.params.data, self.tcfg.chat_fraction, self.mcfg.block_size)
        self.code = code_fingerprint()
        probing = self.tcfg.answer_probe and self.dist.is_main  # rank 0 alone asks, and needs the index
        self.probe = AnswerProbe.for_run(self.tcfg.answer_probe, params.seed) if probing else None
        self.dist.agree(self.data.fingerprint, "data")
        self.dist.agree(self.code, "code")
        set_seed(self.params.seed)  # model init draws from the global generator
        from bytechat.model import GPT

        self.model = GPT(self.mcfg).to(self.device)
        self.model.train()
        self.optimizer = build_optimizer(self.model, self.tcfg, self.device)
        self.sampler = make_generator(self.params.seed)
        self.state = RunState()  # replaced by the checkpoint's when resuming
        self.resumed_from = self.try_resume()
        # eval_model: the model without DDP (eval needs no gradient sync); forward: with it.
        self.eval_model = torch.compile(self.model) if self.tcfg.compile else self.model
        self.forward = self.dist.wrap(self.eval_model, self.device)

    # -- resuming

    def try_resume(self) -> int | None:
        """Rank 0 picks the checkpoint (moving damaged or stale files aside) and sends it to
        every rank, so only rank 0's machine needs the checkpoints folder."""
        picked = self.pick_checkpoint() if self.dist.is_main else None
        picked = self.dist.from_main(picked)
        if picked is None:
            return None
        ckpt, name = picked
        self.load(ckpt)
        self.log.say(f"resuming {self.profile.name} from {name} at step {self.state.step}")
        return self.state.step

    def pick_checkpoint(self) -> tuple[dict, str] | None:
        """(checkpoint, file name) of last.pt (else last.prev.pt) when it belongs to this
        exact run; else None (fresh)."""
        try:
            found = ckpt_io.load_latest(self.ckpt_dir)
        except ckpt_io.CheckpointError as exc:
            self.log.shout(f"{exc}; starting fresh")
            found = None
        if found is None:
            self.stash_stale(0)
            return None
        ckpt, path = found
        diffs = ckpt_io.differences(ckpt, self.mcfg, self.tcfg, self.data.fingerprint, self.code) + self.misfits(ckpt)
        if diffs:
            self.log.shout(f"{path}: made with other settings or code ({'; '.join(diffs)}); starting fresh")
            self.stash_stale(int(ckpt.get("step", 0)))
            return None
        return ckpt, path.name

    def misfits(self, ckpt: Mapping) -> list[str]:
        """Why ckpt's tensors cannot be loaded into this code's model and optimizer (the
        configs can match while the model code changed under them)."""
        problems = []
        want = {k: tuple(v.shape) for k, v in self.model.state_dict().items()}
        have = {k: tuple(v.shape) for k, v in ckpt["model"].items()}
        if want != have:
            problems.append("model: the weights do not fit the current model code")
        groups = ckpt["optimizer"].get("param_groups", [])
        if [len(g["params"]) for g in groups] != [len(g["params"]) for g in self.optimizer.param_groups]:
            problems.append("optimizer: parameter groups differ from the current training code")
        return problems

    def stash_stale(self, step: int) -> None:
        if self.dist.is_main and (moved := ckpt_io.move_stale(self.ckpt_dir, step)):
            self.log.shout(f"moved the old checkpoints to {moved}")

    def load(self, ckpt: Mapping) -> None:
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        ckpt_io.restore_rng(ckpt["rng"])
        self.sampler.set_state(ckpt["sampler"])
        self.state = RunState(step=int(ckpt["step"]), val_loss=ckpt["val_loss"], best_val_loss=ckpt["best_val_loss"])
        self.state.answers, self.state.best_answers = ckpt.get("answers"), ckpt.get("best_answers")

    # -- stepping

    def mix_at(self, step: int) -> Mapping[str, float]:
        """The source mix step `step` draws its batches by (p_chat in the chat phase)."""
        return self.params.data.p_chat if phase_at(step, self.tcfg) == CHAT else self.params.data.p_train

    def train_step(self, step: int) -> torch.Tensor:
        """One optimizer step (grad_accum micro-steps); returns the mean micro-batch loss."""
        mix = self.mix_at(step)
        batches = (
            get_batch(
                self.data.train,
                mix,
                self.micro_rows,
                self.mcfg.block_size,
                self.device,
                self.sampler,
                rank=self.dist.rank,
                world_size=self.dist.world_size,
                starts=self.data.train_starts,
                spans=self.data.train_spans if self.mcfg.span_dim > 0 else None,
            )
            for _ in range(self.tcfg.grad_accum)
        )
        return optimizer_step(
            self.forward, self.model, self.optimizer, self.tcfg, step, batches, self.device, self.amp, self.grad_sync
        )

    def grad_sync(self, last: bool) -> contextlib.AbstractContextManager:
        """Under DDP, all-reduce gradients only on the last micro-step of a step."""
        if self.dist.enabled and not last:
            return self.forward.no_sync()
        return contextlib.nullcontext()

    def evaluate(self, batches: Mapping[str, list]) -> None:
        losses = validation_losses(self.eval_model, batches, self.device, self.amp, self.dist)
        self.state.val_losses = losses
        state = self.state
        state.val_loss = selection_loss(losses, self.params.data.p_train, self.params.data.p_chat)
        state.answers = None
        if self.tcfg.answer_probe and phase_at(state.step - 1, self.tcfg) == CHAT:
            state.answers = self.dist.from_main(self.probe.score(ckpt_io.unwrap(self.model)) if self.probe else None)
        if is_better(state.val_loss, state.answers, state.best_val_loss, state.best_answers):
            state.best_val_loss, state.best_answers = state.val_loss, state.answers
            self.save(ckpt_io.BEST)

    def save(self, name: str) -> None:
        if not self.dist.is_main:
            return
        ckpt = ckpt_io.build_checkpoint(
            model=self.model,
            optimizer=self.optimizer,
            model_config=self.mcfg,
            train_config=self.tcfg,
            profile=self.profile.name,
            step=self.state.step,
            val_loss=self.state.val_loss,
            best_val_loss=self.state.best_val_loss,
            answers=self.state.answers,
            best_answers=self.state.best_answers,
            answer_style=self.params.grounded.answers,
            sampler=self.sampler,
            data=self.data.fingerprint,
            code=self.code,
        )
        ckpt_io.save_checkpoint(ckpt, self.ckpt_dir / name, keep_previous=name == ckpt_io.LAST)

    # -- the loop

    def run(self) -> TrainResult:
        steps = self.tcfg.steps
        if self.state.step >= steps:
            self.log.say(f"{self.profile.name}: already trained ({self.state.step}/{steps} steps); nothing to do")
            return self.result()
        batches = eval_batches(
            self.data.val,
            self.micro_rows,
            self.mcfg.block_size,
            self.tcfg.eval_batches,
            self.params.seed,
            self.device,
            self.dist,
            self.data.val_starts,
        )
        peak = measure_peak_flops(self.device, self.amp) * self.dist.world_size  # every rank's hardware
        with self.log.running(self.state.step, resume=self.resumed_from is not None):
            self.loop(batches, peak)
        return self.result()

    def loop(self, batches: Mapping[str, list], peak: float) -> None:
        cfg = self.tcfg
        speed = Speedometer(
            cfg.batch_size * self.mcfg.block_size, float(ckpt_io.unwrap(self.model).flops_per_byte()), peak, self.device
        )
        first = self.state.step
        kill_after = int(os.environ.get("BYTECHAT_TEST_KILL_AFTER_STEP") or 0)  # tests only: see test_resume.py
        for step in range(first, cfg.steps):
            if step == first or phase_at(step, cfg) != phase_at(step - 1, cfg):
                self.announce_phase(step)
            loss = self.train_step(step)
            self.state.step = done = step + 1
            speed.count_step()
            self.log.step_done()
            last = done == cfg.steps
            if done % cfg.log_every == 0 or last:
                self.log_training(loss, lr_at(step, cfg), speed)
            if done % cfg.eval_every == 0 or last:
                self.evaluate(batches)
                s = self.state
                self.log.validation(s.step, s.val_loss, s.val_losses, s.best_val_loss, s.answers, s.best_answers)
                speed.restart()  # eval time is not training speed
            if done % cfg.checkpoint_every == 0 or last:
                self.save(ckpt_io.LAST)
            if done % cfg.log_every == 0 or done % cfg.eval_every == 0 or last:
                self.log.summary()
            if done == kill_after:  # a SIGKILL at an exact step, its logs and checkpoint written
                os.kill(os.getpid(), 9)

    def announce_phase(self, step: int) -> None:
        """Say (and record as the dvclive param `phase`) which mix the steps from `step` draw by."""
        phase = phase_at(step, self.tcfg)
        mix = " ".join(f"{s} {p:g}" for s, p in self.mix_at(step).items())
        name = "p_chat" if phase == CHAT else "p_train"
        until = chat_start(self.tcfg) if phase != CHAT else self.tcfg.steps
        self.log.phase(
            f"step {step}: {phase} phase, batches drawn by {name} ({mix}) until step {until}",
            {"phase": phase, "chat_start": chat_start(self.tcfg)},
        )

    def log_training(self, loss: torch.Tensor, lr: float, speed: Speedometer) -> None:
        self.state.train_loss = float(self.dist.mean(loss))  # syncs the device (every rank calls this)
        if not math.isfinite(self.state.train_loss):
            raise FloatingPointError(f"step {self.state.step}: training loss is {self.state.train_loss} (lr too high?)")
        bps, mfu = speed.read()
        phase = phase_at(self.state.step - 1, self.tcfg)  # the phase of the step just taken
        self.log.training(self.state.step, phase, self.state.train_loss, lr, bps, mfu, chat=phase == CHAT)
        speed.restart()

    def result(self) -> TrainResult:
        return TrainResult(
            profile=self.profile.name,
            step=self.state.step,
            train_loss=self.state.train_loss,
            val_loss=self.state.val_loss,
            best_val_loss=self.state.best_val_loss,
            val_losses=dict(self.state.val_losses),
            resumed_from=self.resumed_from,
            seconds=time.perf_counter() - self.started,
            checkpoint=self.ckpt_dir / ckpt_io.LAST,
        )


def resolve_profile(params: Params, name: str, steps: int | None = None) -> Profile:
    """The named profile, with steps overridden when given (a different run: it resumes
    only from checkpoints made with the same override)."""
    profile = params.profile(name)
    if steps is None:
        return profile
    if steps <= 0:
        raise ConfigError(f"--steps: must be > 0 (got {steps})")
    return dataclasses.replace(profile, train=dataclasses.replace(profile.train, steps=steps))


def train(
    profile: str,
    *,
    params_path: str | Path | None = None,
    steps: int | None = None,
    device: str | torch.device | None = None,
    quiet: bool = False,
) -> TrainResult:
    params = load_params(params_path)
    prof = resolve_profile(params, profile, steps)
    dist = Dist.from_env()
    dev = dist.device(device if isinstance(device, torch.device) else get_device(device))
    dist.start(dev)
    finished = False
    try:
        result = Trainer(params, prof, device=dev, dist=dist, quiet=quiet).run()
        finished = True
        return result
    finally:
        dist.stop(finished=finished)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bytechat.train.trainer", description="Train one profile of params.yaml.")
    parser.add_argument("--profile", required=True, help="profile name under profiles: in params.yaml")
    parser.add_argument("--steps", type=int, default=None, help="override the profile's train.steps")
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the repo root)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: auto / BYTECHAT_DEVICE)")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        result = train(args.profile, params_path=args.params, steps=args.steps, device=args.device)
    except (ConfigError, StreamError, BatchError, ckpt_io.CheckpointError, ProbeError, FloatingPointError) as exc:
        print(f"bytechat.train.trainer: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if not lost_peer(exc):
            raise
        print(
            f"bytechat.train.trainer: error: rank {Dist.from_env().rank}: lost contact with another rank "
            f"({ckpt_io.error_line(exc)}); another process died or hung: see torchrun's summary",
            file=sys.stderr,
        )
        return 3
    if not Dist.from_env().is_main:
        return 0
    val = "n/a" if result.val_loss is None else f"{result.val_loss:.4f}"
    print(f"{result.profile}: {result.step} steps, val loss {val}, {result.seconds:.1f} s -> {result.checkpoint}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

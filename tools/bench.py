"""Performance benchmarks in one run: `python -m tools.bench [--quick] [--out DIR]`
(`make bench`). Writes DIR/report.json and a readable DIR/report.md (default
artifacts/bench), each section with its target and whether it was met:

  peak      the machine's matmul rate, fp32 and bf16, 1024^3 (median of repeats)
  train     training steps (forward + backward + clip + AdamW) of the params.yaml
            profiles: the default fast path (what Trainer runs: bf16 autocast where the
            CPU has native bf16, fused AdamW) against a plain fp32 reference of the same
            model, same batch, steps interleaved; bytes/s and MFU
  decode    batch-1 bytes/s with the KV cache and with full recomputation at 256 bytes
            of context (train-profile model), and time to first byte for a 1 KB prompt
  batching  get_batch on real memmapped streams, as a share of a training step
  streams   the streams stage (wikitext_articles + write_stream) on a generated
            WikiText-like corpus, in a subprocess: MB/s and peak RSS at two sizes
  eval      score_bytes throughput with the smoke model, auto dtype and fp32
  web       tools.loadtest against a server with a tiny model: requests/s, p50/p99
  serve     the server with 1, 4 and 16 clients streaming replies, batched and unbatched:
            aggregate bytes/s, time to first byte, p50/p99 (smoke model, --serve-ckpt)
  notes     the notes index (tools.notes_bench): top-3 search latency on the example
            graph, and build time + peak RSS for a synthetic 10,000-page (~20 MB) folder

Timings on a shared machine are noisy: every figure is a median of repeats, A/B
comparisons interleave their two sides, and the report records the load average.
Threads: training/eval/peak run with --threads (default: torch's default, one per
core, the fastest on an idle machine); decoding runs with the chat's thread count
(BYTECHAT_THREADS, default 1; see generate.set_decode_threads). On a busy 2-core
machine, --threads 1 avoids OpenMP threads waiting for a busy core.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.core.atomic import write_json, write_text
from bytechat.core.config import SOURCES, Profile, load_params
from bytechat.core.device import autocast_dtype, cpu_has_bf16, get_device, synchronize
from tools.notes_bench import bench_notes
from tools.notes_bench import section_lines as notes_section_lines

SECTIONS = ("peak", "train", "decode", "batching", "streams", "eval", "web", "serve", "notes")
MIB = 1 << 20

# Targets (from the performance issue), checked on every run.
TARGET_MFU = 0.50  # train profile, fast path, of the matmul peak of its dtype
TARGET_SPEEDUP = 1.5  # fast path over the fp32 reference, train profile
TARGET_LOSS_REL = 0.01  # |fast loss - fp32 loss| / fp32 loss on the same batch and weights
TARGET_KV_RATIO = 6.0  # KV-cache decoding over full recomputation
TARGET_KV_BPS = 300.0  # KV-cache decoding bytes/s at batch 1
TARGET_BATCH_SHARE = 0.01  # get_batch time / training step time
TARGET_STREAMS_MBPS = 100.0
TARGET_STREAMS_PEAK_MIB = 100.0  # "200 MB in well under 200 MB of RAM"
TARGET_STREAMS_GROWTH_MIB = 16.0  # peak RSS at the full size minus at a tenth of it: flat
TARGET_SERVE_SCALING = 4.0  # batched server: aggregate bytes/s at the most clients over one client
TARGET_SERVE_P99_S = 1.5  # batched server: p99 latency of a reply at the most clients
TARGET_SERVE_SINGLE = 0.9  # batched server, one client: bytes/s over the unbatched server's


@dataclass(frozen=True)
class Plan:
    """How much to measure. FULL is `make bench` (a few minutes); QUICK is --quick."""

    peak_repeats: int = 30
    train_warmup: int = 3  # steps per path before timing
    train_steps: int = 15  # timed steps per path (median)
    decode_bytes: int = 64  # timed bytes per decode measurement
    decode_repeats: int = 5
    ttfb_repeats: int = 9
    batch_calls: int = 300
    batch_stream_mb: float = 4.0  # the wiki stream; roam a quarter, primer a sixteenth
    stream_mb: float = 200.0  # generated corpus for the streams stage (plus one a tenth as big)
    eval_kb: float = 200.0
    eval_fp32: bool = True  # also score in fp32 for the speedup of the auto dtype
    web_requests: int = 2000
    web_concurrency: int = 16
    serve_clients: tuple[int, ...] = (1, 4, 16)  # concurrent clients streaming replies, batched and not
    serve_requests_per_client: int = 8
    serve_max_new_tokens: int = 128
    notes_queries: int = 500  # search latency: questions on the example graph
    notes_pages: int = 10000  # synthetic notes folder to index (~2 KB a page), and a tenth of it


FULL = Plan()
QUICK = Plan(
    peak_repeats=5,
    train_warmup=1,
    train_steps=3,
    decode_bytes=16,
    decode_repeats=1,
    ttfb_repeats=3,
    batch_calls=50,
    batch_stream_mb=1.0,
    stream_mb=20.0,
    eval_kb=20.0,
    eval_fp32=False,
    web_requests=100,
    web_concurrency=8,
    serve_requests_per_client=2,
    notes_queries=200,
    notes_pages=2000,
)


def median_time(fn: Callable[[], object], repeats: int, device: torch.device | None = None) -> float:
    """Median wall seconds of fn() over repeats calls (after one untimed call)."""
    fn()
    times = []
    for _ in range(repeats):
        if device is not None:
            synchronize(device)
        start = time.perf_counter()
        fn()
        if device is not None:
            synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@contextlib.contextmanager
def torch_threads(n: int | None):
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def dtype_name(dtype: torch.dtype | None) -> str:
    return {None: "fp32", torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[dtype]


# ---------------------------------------------------------------- peak


def matmul_gflops(device: torch.device, dtype: torch.dtype, repeats: int, n: int = 1024) -> float:
    """Median GFLOP/s of an n^3 matmul (2 n^3 FLOPs), as run_log.measure_peak_flops defines the peak."""
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    b = torch.randn(n, n, generator=gen).to(device=device, dtype=dtype)
    return 2 * n**3 / median_time(lambda: a @ b, repeats, device) / 1e9


def bench_peak(plan: Plan, device: torch.device) -> dict:
    fp32 = matmul_gflops(device, torch.float32, plan.peak_repeats)
    bf16 = matmul_gflops(device, torch.bfloat16, plan.peak_repeats)
    return {
        "fp32_gflops": round(fp32, 1),
        "bf16_gflops": round(bf16, 1),
        "n": 1024,
        "repeats": plan.peak_repeats,
        "target": "none (the reference for MFU)",
        "met": None,
    }


# ---------------------------------------------------------------- train


class StepRunner:
    """One training path of a profile: the model, its optimizer, and the Trainer's own
    step (bytechat.train.step.optimizer_step: lr, micro-steps under autocast, clip, AdamW)."""

    def __init__(self, profile: Profile, amp: torch.dtype | None, device: torch.device, seed: int) -> None:
        from bytechat.model import GPT
        from bytechat.train.step import build_optimizer

        self.mcfg, self.tcfg, self.amp, self.device = profile.model, profile.train, amp, device
        torch.manual_seed(seed)  # both paths start from the same weights
        self.model = GPT(self.mcfg).to(device).train()
        self.optimizer = build_optimizer(self.model, self.tcfg, device)
        self.step_no = 0

    def step(self, batches: Sequence[tuple[torch.Tensor, torch.Tensor]]) -> float:
        from bytechat.train.step import optimizer_step

        assert len(batches) == self.tcfg.grad_accum, "one micro-batch per grad_accum step"
        loss = optimizer_step(
            self.model, self.model, self.optimizer, self.tcfg, self.step_no, batches, self.device, self.amp
        )
        self.step_no += 1
        return float(loss)


def bench_train_profile(profile: Profile, plan: Plan, device: torch.device, peaks: dict, seed: int) -> dict:
    mcfg, tcfg = profile.model, profile.train
    micro = tcfg.batch_size // tcfg.grad_accum
    gen = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(tcfg.grad_accum):
        data = torch.randint(0, 256, (micro, mcfg.block_size + 1), generator=gen)
        batches.append((data[:, :-1].contiguous().to(device), data[:, 1:].contiguous().to(device)))
    amp = autocast_dtype(device, tcfg.dtype)
    runners = {"fast": StepRunner(profile, amp, device, seed), "reference": StepRunner(profile, None, device, seed)}
    times: dict[str, list[float]] = {name: [] for name in runners}
    first_loss: dict[str, float] = {}
    order = list(runners)
    bar = tqdm(total=(plan.train_warmup + plan.train_steps) * 2, desc=f"train {profile.name}", unit="step", leave=False)
    for i in range(plan.train_warmup + plan.train_steps):
        for name in order if i % 2 == 0 else order[::-1]:  # alternate who goes first
            synchronize(device)
            start = time.perf_counter()
            loss = runners[name].step(batches)
            synchronize(device)
            elapsed = time.perf_counter() - start
            if i == 0:
                first_loss[name] = loss  # same weights and batch for both paths
            if i >= plan.train_warmup:
                times[name].append(elapsed)
            bar.update(1)
    bar.close()
    bytes_per_step = tcfg.batch_size * mcfg.block_size
    flops_per_byte = float(runners["fast"].model.flops_per_byte())
    out: dict = {
        "model": asdict(mcfg),
        "batch_size": tcfg.batch_size,
        "grad_accum": tcfg.grad_accum,
        "flops_per_byte": flops_per_byte,
        "steps_timed": plan.train_steps,
    }
    for name, runner in runners.items():
        step_s = statistics.median(times[name])
        bps = bytes_per_step / step_s
        dtype = dtype_name(runner.amp)
        peak = peaks.get(f"{dtype}_gflops")
        out[name] = {
            "dtype": dtype,
            "step_ms": round(step_s * 1e3, 1),
            "bytes_per_s": round(bps, 1),
            "gflops": round(flops_per_byte * bps / 1e9, 1),
            "mfu": round(flops_per_byte * bps / (peak * 1e9), 4) if peak else None,
            "first_loss": round(first_loss[name], 5),
        }
    ref_loss = first_loss["reference"]
    out["speedup"] = round(out["reference"]["step_ms"] / out["fast"]["step_ms"], 3)
    out["loss_rel_diff"] = abs(first_loss["fast"] - ref_loss) / abs(ref_loss)
    return out


def bench_train(plan: Plan, device: torch.device, peaks: dict, profiles: dict[str, Profile], seed: int) -> dict:
    results = {name: bench_train_profile(profile, plan, device, peaks, seed) for name, profile in profiles.items()}
    section: dict = {"profiles": results}
    main = results.get("train")
    section["target"] = (
        f"train profile: fast-path MFU >= {TARGET_MFU:.0%} of its dtype's peak, >= {TARGET_SPEEDUP}x the "
        f"fp32 reference, first-step loss within {TARGET_LOSS_REL:.0%} of fp32"
    )
    if main is None or main["fast"]["mfu"] is None:
        section["met"] = None
    else:
        section["met"] = bool(
            main["fast"]["mfu"] >= TARGET_MFU
            and main["speedup"] >= TARGET_SPEEDUP
            and main["loss_rel_diff"] <= TARGET_LOSS_REL
        )
    return section


# ---------------------------------------------------------------- decode


def decode_threads() -> int:
    raw = os.environ.get("BYTECHAT_THREADS", "1")
    try:
        return max(1, int(raw))
    except ValueError:
        return 1


def bench_decode(plan: Plan, device: torch.device, profile: Profile, seed: int) -> dict:
    from bytechat.serve.generate import SamplingConfig, generate_bytes
    from tools.decode_speed import decode_speed
    from bytechat.model import GPT
    from bytechat.core.rng import make_generator

    torch.manual_seed(seed)
    model = GPT(profile.model).to(device).eval()
    threads = decode_threads() if device.type == "cpu" else None
    context = 256
    kv, full = [], []
    for _ in tqdm(range(plan.decode_repeats), desc="decode", leave=False):
        kv.append(decode_speed(model, context=context, n=plan.decode_bytes, use_cache=True, threads=threads))
        full.append(decode_speed(model, context=context, n=plan.decode_bytes, use_cache=False, threads=threads))
    kv_bps, full_bps = statistics.median(kv), statistics.median(full)

    # Time to first byte: a 1 KB prompt (generate_bytes keeps its last block_size bytes),
    # prefill + the first sample, on a copy set up as ChatEngine sets it up.
    chat_model = copy.deepcopy(model).eval()
    if device.type == "cpu":
        chat_model.use_decode_layout()
    prompt = bytes(32 + (i * 37) % 95 for i in range(1024))
    sampling = SamplingConfig(max_new_tokens=1)

    def first_byte() -> None:
        next(generate_bytes(chat_model, prompt, sampling, make_generator(0)))

    with torch_threads(threads):
        ttfb = median_time(first_byte, plan.ttfb_repeats, device)
    ratio = kv_bps / full_bps
    return {
        "model": asdict(profile.model),
        "threads": threads,
        "context": min(context, profile.model.block_size),
        "bytes_timed": plan.decode_bytes,
        "kv_bytes_per_s": round(kv_bps, 1),
        "full_bytes_per_s": round(full_bps, 1),
        "kv_over_full": round(ratio, 2),
        "ttfb_ms": round(ttfb * 1e3, 2),
        "ttfb_prompt_bytes": len(prompt),
        "ttfb_prefill_bytes": min(len(prompt), profile.model.block_size),
        "target": f"KV cache >= {TARGET_KV_RATIO:g}x full recomputation and >= {TARGET_KV_BPS:g} bytes/s",
        "met": bool(ratio >= TARGET_KV_RATIO and kv_bps >= TARGET_KV_BPS),
    }


# ---------------------------------------------------------------- batching


def bench_batching(
    plan: Plan, device: torch.device, profile: Profile, p_train: dict, step_s: float | None, seed: int
) -> dict:
    from bytechat.data.batching import get_batch
    from bytechat.data.streams import open_stream, write_stream

    rng = np.random.default_rng(seed)
    sizes = {
        "wiki": plan.batch_stream_mb,
        "roam": plan.batch_stream_mb / 4,
        "primer": plan.batch_stream_mb / 16,
        "grounded": plan.batch_stream_mb / 2,
    }
    rows, block = profile.train.batch_size // profile.train.grad_accum, profile.model.block_size
    with tempfile.TemporaryDirectory(prefix="bytechat-bench-") as tmp:
        streams = {}
        for source in SOURCES:
            path = Path(tmp) / f"{source}_train.bin"
            data = rng.integers(32, 127, int(sizes[source] * MIB), dtype=np.uint8).tobytes()
            write_stream([data], path, "bench")
            streams[source] = open_stream(path)
        gen = torch.Generator().manual_seed(seed)
        seconds = median_time(lambda: get_batch(streams, p_train, rows, block, device, gen), plan.batch_calls)
        del streams  # close the memmaps before the folder goes
    share = seconds / step_s if step_s else None
    return {
        "rows": rows,
        "block_size": block,
        "stream_mb": {k: round(v, 3) for k, v in sizes.items()},
        "get_batch_us": round(seconds * 1e6, 1),
        "train_step_ms": round(step_s * 1e3, 1) if step_s else None,
        "share_of_step": share,
        "target": f"get_batch <= {TARGET_BATCH_SHARE:.0%} of a train-profile step (fast path)",
        "met": None if share is None else bool(share <= TARGET_BATCH_SHARE),
    }


# ---------------------------------------------------------------- streams

_STREAMS_CHILD = r"""
import json, sys, time
from pathlib import Path

def rss_kib(field):  # this process's VmRSS / VmHWM (peak) in KiB; VmHWM starts afresh at exec
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

src, dst = sys.argv[1:3]
from bytechat.data.wikitext import wikitext_articles
from bytechat.data.streams import write_stream
before = rss_kib("VmHWM")
start = time.perf_counter()
meta = write_stream(wikitext_articles(Path(src)), Path(dst), "bench")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "bytes": meta["bytes"], "documents": meta["documents"],
                  "rss_before_kb": before, "peak_rss_kb": rss_kib("VmHWM")}))
"""


_WORDS = (
    "the of and in to a was is for on as by with he that at from his it an were are which this be or "
    "also first new after had one their its but not has been have they who two her she city album film "
    "river village church season game series station war army school party state team released known "
    "during later between including following national university population century north south"
).split()


def write_wikitext_like(path: Path, n_bytes: int, seed: int = 0) -> int:
    """A WikiText-like file of about n_bytes: articles under " = Title = " headings with
    " = = Section = = " subheadings and paragraphs of words. Written in pieces (flat memory)."""
    rng = random.Random(seed)

    def paragraph() -> str:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(40, 160))]
        return " " + " ".join(words).capitalize() + " . \n"

    bodies = []
    for _ in range(64):  # distinct article bodies, reused under fresh headings
        parts = [" \n"]
        for s in range(rng.randint(2, 5)):
            parts.append(f" = = Section {s} = = \n \n")
            parts.extend(paragraph() for _ in range(rng.randint(2, 6)))
            parts.append(" \n")
        bodies.append("".join(parts))
    written, article = 0, 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        while written < n_bytes:
            chunk = []
            for _ in range(64):
                chunk.append(f" \n = Article {article} = \n")
                chunk.append(bodies[article % len(bodies)])
                article += 1
            text = "".join(chunk)
            fh.write(text)
            written += len(text.encode("utf-8"))
    return written


def _repo_env() -> dict:
    """This environment with the repository root on PYTHONPATH (for `bytechat` and `tools`)."""
    root = str(Path(__file__).resolve().parent.parent)
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}


def run_streams_stage(src: Path, dst: Path) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _STREAMS_CHILD, str(src), str(dst)],
        capture_output=True,
        text=True,
        env=_repo_env(),
        timeout=600,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"streams stage subprocess failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_streams(plan: Plan, seed: int) -> dict:
    kb = 1024
    runs = {}
    with tempfile.TemporaryDirectory(prefix="bytechat-bench-streams-") as tmp:
        for label, mb in (("small", plan.stream_mb / 10), ("full", plan.stream_mb)):
            src, dst = Path(tmp) / f"{label}.txt", Path(tmp) / f"{label}.bin"
            size = write_wikitext_like(src, int(mb * 1e6), seed)
            result = run_streams_stage(src, dst)
            runs[label] = {
                "corpus_mb": round(size / 1e6, 1),
                "articles": result["documents"],
                "seconds": round(result["seconds"], 3),
                "mb_per_s": round(size / 1e6 / result["seconds"], 1),
                "rss_before_mib": round(result["rss_before_kb"] / kb, 1),
                "peak_rss_mib": round(result["peak_rss_kb"] / kb, 1),
            }
            src.unlink()
            dst.unlink()
    full, small = runs["full"], runs["small"]
    growth = full["peak_rss_mib"] - small["peak_rss_mib"]
    return {
        **runs,
        "rss_growth_mib": round(growth, 1),
        "target": (
            f">= {TARGET_STREAMS_MBPS:g} MB/s; peak RSS flat in corpus size (<= +{TARGET_STREAMS_GROWTH_MIB:g} "
            f"MiB from a tenth of the corpus to all of it) and <= {TARGET_STREAMS_PEAK_MIB:g} MiB"
        ),
        "met": bool(
            full["mb_per_s"] >= TARGET_STREAMS_MBPS
            and growth <= TARGET_STREAMS_GROWTH_MIB
            and full["peak_rss_mib"] <= TARGET_STREAMS_PEAK_MIB
        ),
    }


# ---------------------------------------------------------------- eval


def bench_eval(plan: Plan, device: torch.device, profile: Profile, seed: int) -> dict:
    from bytechat.eval.bpb import score_bytes
    from bytechat.model import GPT

    torch.manual_seed(seed)
    model = GPT(profile.model).to(device).eval()
    rng = np.random.default_rng(seed)
    data = rng.integers(32, 127, int(plan.eval_kb * 1024), dtype=np.uint8)
    amp = autocast_dtype(device, "auto")
    score_bytes(model, data[: 4 * profile.model.block_size], device=device, dtype=amp, progress=False)  # warm-up
    out: dict = {"model": asdict(profile.model), "bytes": len(data)}
    dtypes = [("auto", amp)] + ([("fp32", None)] if plan.eval_fp32 and amp is not None else [])
    for label, dtype in dtypes:
        synchronize(device)
        start = time.perf_counter()
        score = score_bytes(model, data, device=device, dtype=dtype, progress=False)
        synchronize(device)
        seconds = time.perf_counter() - start
        out[label] = {
            "dtype": dtype_name(dtype),
            "seconds": round(seconds, 3),
            "bytes_per_s": round(len(data) / seconds, 1),
            "loss": round(score.loss, 5),
        }
    if "fp32" in out:
        out["auto_over_fp32"] = round(out["auto"]["bytes_per_s"] / out["fp32"]["bytes_per_s"], 2)
    out.update(target="none (throughput is reported)", met=None)
    return out


# ---------------------------------------------------------------- web


def bench_web(plan: Plan) -> dict:
    with tempfile.TemporaryDirectory(prefix="bytechat-bench-web-") as tmp:
        out = Path(tmp) / "web.json"
        command = [
            sys.executable,
            "-m",
            "tools.loadtest",
            "--requests",
            str(plan.web_requests),
            "--concurrency",
            str(plan.web_concurrency),
            "--out",
            str(out),
        ]
        proc = subprocess.run(command, capture_output=True, text=True, env=_repo_env(), timeout=900)
        if not out.exists():
            raise RuntimeError(f"loadtest wrote no results ({proc.returncode}): {proc.stderr[-2000:]}")
        result = json.loads(out.read_text(encoding="utf-8"))
    errors = sum(result["errors"].values())
    return {
        "requests": result["requests"],
        "concurrency": result["concurrency"],
        "max_new_tokens": result["max_new_tokens"],
        "requests_per_s": result["requests_per_s"],
        "p50_ms": result["latency_ms"]["p50"],
        "p99_ms": result["latency_ms"]["p99"],
        "errors": errors,
        "error_kinds": result["errors"],
        "generated_bytes_per_s": result["generated_bytes_per_s"],
        "target": "every request answered completely (0 errors)",
        "met": errors == 0,
    }


# ---------------------------------------------------------------- serve


def serve_model(ckpt: str | None, folder: Path, profile: Profile) -> tuple[Path, str]:
    """(export folder, what it is): ckpt; else the newest export; else (or ckpt "random")
    a randomly initialised model of `profile`'s size, which never ends its turn, so every
    reply is max_new_tokens long."""
    from bytechat.model.export import newest_export
    from tools.local_server import save_tiny_model

    if ckpt is None:
        found = newest_export()
        if found is not None:
            return found, f"{found.name} (newest export)"
    elif ckpt != "random":
        return Path(ckpt), Path(ckpt).name
    path = save_tiny_model(folder, config=asdict(profile.model))
    return path, f"random {profile.name}-profile model"


def bench_serve(plan: Plan, ckpt: str | None, profile: Profile) -> dict:
    """The chat server under 1..N concurrent clients streaming replies (tools.loadtest),
    with its batched decoding and without (--max-batch-size 0: each reply alone on worker
    threads, the server before batching). Both servers run side by side, idle in turn;
    at each client count the two are measured back to back, in alternating order."""
    import asyncio

    from tools.loadtest import run_load, summarize
    from tools.local_server import running_server

    out: dict = {
        "clients": list(plan.serve_clients),
        "max_new_tokens": plan.serve_max_new_tokens,
        "requests_per_client": plan.serve_requests_per_client,
        "unbatched": [],
        "batched": [],
    }
    common = [
        "--no-notes",
        "--max-waiting",
        str(max(64, max(plan.serve_clients))),
        "--max-new-tokens",
        str(max(1024, plan.serve_max_new_tokens)),
    ]
    with contextlib.ExitStack() as stack:
        path, out["model"] = serve_model(ckpt, Path(stack.enter_context(tempfile.TemporaryDirectory())), profile)
        urls = {
            "unbatched": stack.enter_context(running_server(path, "--max-batch-size", "0", *common)),
            "batched": stack.enter_context(running_server(path, *common)),
        }
        for i, clients in enumerate(plan.serve_clients):
            for mode in ("unbatched", "batched") if i % 2 == 0 else ("batched", "unbatched"):
                args = argparse.Namespace(
                    concurrency=clients,
                    requests=clients * plan.serve_requests_per_client,
                    max_new_tokens=plan.serve_max_new_tokens,
                    stream=True,
                    timeout_s=120.0,
                )
                outcomes, wall_s = asyncio.run(run_load(urls[mode], args))
                run = summarize(outcomes, wall_s, urls[mode], args)
                out[mode].append(
                    {
                        "clients": clients,
                        "requests": run["requests"],
                        "bytes_per_s": run["generated_bytes_per_s"],
                        "mean_reply_bytes": run["mean_reply_bytes"],
                        "ttfb_p50_ms": (run["ttfb_ms"] or {}).get("p50"),
                        "p50_ms": run["latency_ms"]["p50"],
                        "p99_ms": run["latency_ms"]["p99"],
                        "errors": sum(run["errors"].values()),
                    }
                )
    batched, unbatched = out["batched"], out["unbatched"]
    out["scaling"] = round(batched[-1]["bytes_per_s"] / batched[0]["bytes_per_s"], 2)
    out["single_vs_unbatched"] = round(batched[0]["bytes_per_s"] / unbatched[0]["bytes_per_s"], 3)
    out["most_clients_vs_unbatched"] = round(batched[-1]["bytes_per_s"] / unbatched[-1]["bytes_per_s"], 2)
    out["errors"] = sum(r["errors"] for r in batched + unbatched)
    out["target"] = (
        f"batched: {plan.serve_clients[-1]} clients >= {TARGET_SERVE_SCALING:g}x the bytes/s of "
        f"{plan.serve_clients[0]}, p99 <= {TARGET_SERVE_P99_S:g} s at {plan.serve_clients[-1]}, one "
        f"client >= {TARGET_SERVE_SINGLE:.0%} of the unbatched server's bytes/s; 0 errors"
    )
    out["met"] = bool(
        out["scaling"] >= TARGET_SERVE_SCALING
        and batched[-1]["p99_ms"] <= TARGET_SERVE_P99_S * 1e3
        and out["single_vs_unbatched"] >= TARGET_SERVE_SINGLE
        and out["errors"] == 0
    )
    return out


def serve_section_lines(s: dict) -> list[str]:
    rows = []
    for mode in ("unbatched", "batched"):
        for r in s[mode]:
            rows.append(
                [
                    mode,
                    r["clients"],
                    r["requests"],
                    _fmt(r["bytes_per_s"], ",.0f"),
                    _fmt(r["mean_reply_bytes"], ".0f"),
                    _fmt(r["ttfb_p50_ms"], ".0f"),
                    _fmt(r["p50_ms"], ".0f"),
                    _fmt(r["p99_ms"], ".0f"),
                    r["errors"],
                ]
            )
    return _table(
        [
            "server",
            "clients",
            "requests",
            "bytes/s (all clients)",
            "mean reply B",
            "TTFB p50 ms",
            "p50 ms",
            "p99 ms",
            "errors",
        ],
        rows,
    ) + [
        "",
        f"Model: {s['model']}, replies of at most {s['max_new_tokens']} bytes, streamed. Batched: "
        f"{s['scaling']:.2f}x the bytes/s of one client at {s['clients'][-1]}; one client at "
        f"{s['single_vs_unbatched']:.1%} of the unbatched server; {s['most_clients_vs_unbatched']:.2f}x the "
        f"unbatched server at {s['clients'][-1]} clients.",
    ]


# ---------------------------------------------------------------- the run


def _proc_stat() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, from /proc/stat."""
    fields = [int(v) for v in Path("/proc/stat").read_text(encoding="ascii").split("\n", 1)[0].split()[1:]]
    total = sum(fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - fields[3] - fields[4]) / tick, total / tick  # idle and iowait are not busy


def _own_cpu_seconds() -> float:
    t = os.times()  # this process and its waited-for children (the streams and web subprocesses)
    return t.user + t.system + t.children_user + t.children_system


class OtherLoad:
    """The share of the machine's CPU time used by other processes (not this one or its
    children) since start(): on a shared machine, how much the figures were disturbed."""

    def __init__(self) -> None:
        try:
            self.busy, self.total = _proc_stat()
        except (OSError, ValueError, IndexError):
            self.busy = self.total = None
        self.own = _own_cpu_seconds()

    def percent(self) -> float | None:
        if self.busy is None:
            return None
        busy, total = _proc_stat()
        others = (busy - self.busy) - (_own_cpu_seconds() - self.own)
        return round(100.0 * max(0.0, others) / max(1e-9, total - self.total), 1)


def cpu_busy_percent(seconds: float = 1.0) -> float | None:
    """How busy the CPUs are over `seconds` (sampled before the run, while this process sleeps)."""
    load = OtherLoad()
    time.sleep(seconds)
    return load.percent()


def machine_info(threads: int, device: torch.device) -> dict:
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="ascii", errors="replace").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "device": str(device),
        "torch": torch.__version__,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "native_bf16": cpu_has_bf16(),
        "threads": threads,
        "decode_threads": decode_threads(),
        "python": platform.python_version(),
    }


def run_bench(
    quick: bool = False,
    out_dir: str | Path | None = None,
    *,
    threads: int | None = None,
    skip: Iterable[str] = (),
    plan: Plan | None = None,
    device: str | torch.device | None = None,
    params_path: str | Path | None = None,
    seed: int = 0,
    serve_ckpt: str | None = None,
) -> dict:
    """Run every section not in skip; write report.json and report.md to out_dir
    (default artifacts/bench); return the report."""
    skip = set(skip)
    unknown = skip - set(SECTIONS)
    if unknown:
        raise ValueError(f"skip: unknown sections {sorted(unknown)} (have: {', '.join(SECTIONS)})")
    plan = plan or (QUICK if quick else FULL)
    out_dir = Path(out_dir) if out_dir is not None else paths.bench_dir()
    device = device if isinstance(device, torch.device) else get_device(device)
    params = load_params(params_path)
    threads = threads or torch.get_num_threads()
    report: dict = {
        "quick": quick,
        "plan": asdict(plan),
        "machine": machine_info(threads, device),
        "started": time.strftime("%Y-%m-%d %H:%M:%S"),
        "load_average_start": os.getloadavg()[0],
        "cpu_busy_before_pct": cpu_busy_percent(),
    }
    started = time.perf_counter()
    other_load = OtherLoad()
    peaks: dict = {}
    todo = [s for s in SECTIONS if s not in skip]
    with torch_threads(threads):
        for name in tqdm(todo, desc="bench", unit="section"):
            tqdm.write(f"bench: {name} ...", file=sys.stderr)
            t0 = time.perf_counter()
            section_load = OtherLoad()
            try:
                if name == "peak":
                    result = bench_peak(plan, device)
                    peaks = result
                elif name == "train":
                    if not peaks:
                        peaks = bench_peak(plan, device)
                    result = bench_train(plan, device, peaks, dict(params.profiles), seed)
                elif name == "decode":
                    result = bench_decode(plan, device, params.profile("train"), seed)
                elif name == "batching":
                    train = report.get("train", {}).get("profiles", {}).get("train")
                    step_s = train["fast"]["step_ms"] / 1e3 if train else None
                    result = bench_batching(plan, device, params.profile("train"), params.data.p_train, step_s, seed)
                elif name == "streams":
                    result = bench_streams(plan, seed)
                elif name == "notes":
                    result = bench_notes(plan.notes_queries, plan.notes_pages, seed)
                elif name == "eval":
                    result = bench_eval(plan, device, params.profile("smoke"), seed)
                elif name == "serve":
                    result = bench_serve(plan, serve_ckpt, params.profile("smoke"))
                else:
                    result = bench_web(plan)
            except Exception as exc:  # a broken section is reported; the others still run
                result = {
                    "error": f"{type(exc).__name__}: {exc}",
                    "traceback": traceback.format_exc()[-4000:],
                    "met": False,
                }
                tqdm.write(f"bench: {name} failed: {exc}", file=sys.stderr)
            result["seconds"] = round(time.perf_counter() - t0, 1)
            result["cpu_busy_others_pct"] = section_load.percent()
            report[name] = result
    report["load_average_end"] = os.getloadavg()[0]
    report["cpu_busy_others_pct"] = other_load.percent()
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["skipped"] = sorted(skip)
    write_json(out_dir / "report.json", _jsonable(report))
    write_text(out_dir / "report.md", render_markdown(report))
    return report


def _jsonable(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj


# ---------------------------------------------------------------- markdown


def _fmt(value, spec: str = "") -> str:
    if value is None:
        return "n/a"
    return format(value, spec) if spec else str(value)


def _table(header: Sequence[str], rows: Sequence[Sequence]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _verdict(section: dict) -> str:
    met = section.get("met")
    verdict = "n/a (reported only)" if met is None else ("**met**" if met else "**NOT met**")
    return f"Target: {section.get('target', 'n/a')} — {verdict}"


def render_markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        "# bytechat benchmark" + (" (quick)" if report["quick"] else ""),
        "",
        f"{m['cpu']}, {m['logical_cpus']} logical CPUs, {m['device']}, torch {m['torch']} ({m['cpu_capability']}, "
        f"native bf16: {'yes' if m['native_bf16'] else 'no'}). Threads: {m['threads']} for training/eval/peak, "
        f"{m['decode_threads']} for decoding. Load average {report['load_average_start']:.2f} at the start, "
        f"{report['load_average_end']:.2f} at the end; {report['seconds']:.0f} s in all ({report['started']}).",
        "",
    ]
    before, during = report.get("cpu_busy_before_pct"), report.get("cpu_busy_others_pct")
    if before is not None and during is not None:
        lines[-2] += f" Other processes used {before:.0f}% of the CPUs just before the run and {during:.0f}% during it."
        if max(before, during) > 10:
            lines += [
                "**Warning:** the machine was busy with other work; the figures are pessimistic (rerun on "
                "an idle machine, or with --threads 1 to soften the contention).",
                "",
            ]
    for name in SECTIONS:
        section = report.get(name)
        if section is None:
            continue
        lines += [f"## {name}", ""]
        if "error" in section:
            lines += [f"**failed:** `{section['error']}`", ""]
            continue
        lines += _section_lines(name, section) + ["", _verdict(section)]
        others = section.get("cpu_busy_others_pct")
        if others is not None and others > 10:
            lines.append(f"(other processes used {others:.0f}% of the CPUs during this section)")
        lines.append("")
    return "\n".join(lines)


def _section_lines(name: str, s: dict) -> list[str]:
    if name == "peak":
        return _table(
            ["dtype", "GFLOP/s (1024^3 matmul, median)"],
            [["fp32", _fmt(s["fp32_gflops"], ".1f")], ["bf16", _fmt(s["bf16_gflops"], ".1f")]],
        )
    if name == "train":
        rows = []
        for prof, r in s["profiles"].items():
            mc = r["model"]
            for path in ("fast", "reference"):
                p = r[path]
                rows.append(
                    [
                        f"{prof} ({mc['n_layer']}x{mc['n_embd']}, T={mc['block_size']}, B={r['batch_size']})",
                        f"{path} ({p['dtype']})",
                        _fmt(p["step_ms"], ".1f"),
                        _fmt(p["bytes_per_s"], ",.0f"),
                        _fmt(p["gflops"], ".1f"),
                        _fmt(p["mfu"], ".1%"),
                        _fmt(p["first_loss"], ".4f"),
                    ]
                )
            rows.append(
                [
                    f"{prof}",
                    "fast / reference",
                    f"{r['speedup']:.2f}x",
                    "",
                    "",
                    "",
                    f"rel. diff {r['loss_rel_diff']:.1e}",
                ]
            )
        return _table(["profile", "path", "step ms", "bytes/s", "GFLOP/s", "MFU", "first loss"], rows)
    if name == "decode":
        return _table(
            ["measure", "value"],
            [
                ["KV cache, bytes/s", _fmt(s["kv_bytes_per_s"], ".1f")],
                ["full recomputation, bytes/s", _fmt(s["full_bytes_per_s"], ".1f")],
                ["KV / full", f"{s['kv_over_full']:.1f}x"],
                [
                    f"time to first byte, {s['ttfb_prompt_bytes']} B prompt ({s['ttfb_prefill_bytes']} B prefill)",
                    f"{s['ttfb_ms']:.1f} ms",
                ],
                ["context, threads", f"{s['context']} bytes, {s['threads']}"],
            ],
        )
    if name == "batching":
        return _table(
            ["get_batch (B x T)", "µs", "train step ms", "share of step"],
            [
                [
                    f"{s['rows']} x {s['block_size']}",
                    _fmt(s["get_batch_us"], ".1f"),
                    _fmt(s["train_step_ms"], ".1f"),
                    _fmt(s["share_of_step"], ".3%"),
                ]
            ],
        )
    if name == "streams":
        rows = [
            [
                label,
                _fmt(s[label]["corpus_mb"], ".1f"),
                s[label]["articles"],
                _fmt(s[label]["seconds"], ".2f"),
                _fmt(s[label]["mb_per_s"], ".0f"),
                _fmt(s[label]["rss_before_mib"], ".1f"),
                _fmt(s[label]["peak_rss_mib"], ".1f"),
            ]
            for label in ("small", "full")
        ]
        return _table(["corpus", "MB", "articles", "s", "MB/s", "RSS after imports MiB", "peak RSS MiB"], rows)
    if name == "eval":
        rows = [
            [s[label]["dtype"], _fmt(s[label]["bytes_per_s"], ",.0f"), _fmt(s[label]["loss"], ".4f")]
            for label in ("auto", "fp32")
            if label in s
        ]
        lines = _table([f"score_bytes, {s['bytes']:,} bytes, smoke model", "bytes/s", "loss"], rows)
        if "auto_over_fp32" in s:
            lines += ["", f"auto dtype over fp32: {s['auto_over_fp32']:.2f}x"]
        return lines
    if name == "notes":
        return notes_section_lines(s, _table)
    if name == "serve":
        return serve_section_lines(s)
    if name == "web":
        return _table(
            ["requests", "concurrency", "requests/s", "p50 ms", "p99 ms", "errors", "generated bytes/s"],
            [
                [
                    s["requests"],
                    s["concurrency"],
                    _fmt(s["requests_per_s"], ".1f"),
                    _fmt(s["p50_ms"], ".1f"),
                    _fmt(s["p99_ms"], ".1f"),
                    s["errors"],
                    _fmt(s["generated_bytes_per_s"], ".0f"),
                ]
            ],
        )
    return [f"```\n{json.dumps(s, indent=2)}\n```"]


# ---------------------------------------------------------------- CLI


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="far fewer steps/requests (a smoke check of the bench)")
    parser.add_argument("--out", default=None, help=f"output folder (default {paths.bench_dir()})")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for training/eval/peak (default: torch's default, one per core)",
    )
    parser.add_argument("--skip", default="", help=f"comma-separated sections to skip ({','.join(SECTIONS)})")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: auto / BYTECHAT_DEVICE)")
    parser.add_argument(
        "--serve-ckpt",
        default=None,
        help="model for the serve section: an export, or 'random' (a random smoke-profile model, "
        "replies always full length); default: the newest export, else random",
    )
    args = parser.parse_args(argv)
    if args.threads is not None and args.threads < 1:
        parser.error("--threads must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    skip = [s.strip() for s in args.skip.split(",") if s.strip()]
    try:
        report = run_bench(
            args.quick, args.out, threads=args.threads, skip=skip, device=args.device, serve_ckpt=args.serve_ckpt
        )
    except ValueError as exc:
        print(f"tools.bench: error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else paths.bench_dir()
    print(render_markdown(report))
    print(f"\nwrote {out / 'report.json'} and {out / 'report.md'}", file=sys.stderr)
    failed = [s for s in SECTIONS if isinstance(report.get(s), dict) and "error" in report[s]]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())

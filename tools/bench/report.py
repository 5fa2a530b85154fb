"""The bench run: every section not skipped, in order, each isolated (a failing section is
reported and the others still run), then report.json and a readable report.md."""

from __future__ import annotations

import importlib
import math
import os
import sys
import time
import traceback
from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Iterable

import torch
from tqdm.auto import tqdm

from bytechat.core import paths
from bytechat.core.atomic import write_json, write_text
from bytechat.core.config import load_params
from bytechat.core.device import get_device
from tools.bench.common import FULL, QUICK, Context, Plan, torch_threads
from tools.bench.machine import OtherLoad, cpu_busy_percent, machine_info

# In the order they run: train reads peak's rate, batching reads train's step time.
SECTIONS = ("peak", "train", "decode", "batching", "streams", "eval", "web", "serve", "notes")


def section(name: str) -> ModuleType:
    """The module of a section, tools/bench/<name>.py: run(ctx) -> dict, lines(dict) -> markdown lines."""
    return importlib.import_module(f"tools.bench.{name}")


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
    ctx = Context(plan=plan, device=device, params=params, seed=seed, serve_ckpt=serve_ckpt, report=report)
    started = time.perf_counter()
    other_load = OtherLoad()
    todo = [s for s in SECTIONS if s not in skip]
    with torch_threads(threads):
        for name in tqdm(todo, desc="bench", unit="section"):
            tqdm.write(f"bench: {name} ...", file=sys.stderr)
            t0 = time.perf_counter()
            section_load = OtherLoad()
            try:
                result = section(name).run(ctx)
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


def _verdict(result: dict) -> str:
    met = result.get("met")
    verdict = "n/a (reported only)" if met is None else ("**met**" if met else "**NOT met**")
    return f"Target: {result.get('target', 'n/a')} — {verdict}"


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
        result = report.get(name)
        if result is None:
            continue
        lines += [f"## {name}", ""]
        if "error" in result:
            lines += [f"**failed:** `{result['error']}`", ""]
            continue
        lines += section(name).lines(result) + ["", _verdict(result)]
        others = result.get("cpu_busy_others_pct")
        if others is not None and others > 10:
            lines.append(f"(other processes used {others:.0f}% of the CPUs during this section)")
        lines.append("")
    return "\n".join(lines)

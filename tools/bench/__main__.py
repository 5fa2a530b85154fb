"""`python -m tools.bench [--quick] [--out DIR] [--threads N] [--skip a,b] [--device D]
[--serve-ckpt PATH|random]` (`make bench`): the CLI over tools.bench.report.run_bench."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

from bytechat.core import paths
from tools.bench.report import SECTIONS, render_markdown, run_bench


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.bench", description="Performance benchmarks in one run (make bench)."
    )
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

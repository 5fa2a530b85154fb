"""Stage `eval@<profile>`: bits per byte of the profile's best checkpoint on every val
stream and wiki_test (with gzip/bz2/xz for reference), plus greedy chat samples
and the chat-with-notes metrics (bytechat.eval.grounded).

    python -m stages.eval --profile smoke

Writes artifacts/eval/<profile>/metrics.json and samples.txt. Work is in bytechat.eval.bpb.
"""

from __future__ import annotations

import argparse
import sys

from bytechat.model.checkpoint import CheckpointError
from bytechat.core.config import ConfigError, load_params
from bytechat.eval.bpb import evaluate_profile, eval_dir
from bytechat.eval.grounded import chat_table
from bytechat.model.export import ModelLoadError
from bytechat.notes.index import NotesIndexError
from bytechat.data.streams import StreamError


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    parser.add_argument("--params", default=None, help="params file (default: params.yaml at the repo root)")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "bf16", "fp32"),
        help="autocast dtype for scoring (default auto: bf16 where the hardware is fast)",
    )
    args = parser.parse_args()
    try:
        load_params(args.params).profile(args.profile)  # a clear error for an unknown profile
        metrics = evaluate_profile(args.profile, dtype=args.dtype)
    except (ConfigError, StreamError, CheckpointError, ModelLoadError, NotesIndexError, FileNotFoundError) as exc:
        print(f"stages/eval.py: error: {exc}", file=sys.stderr)
        return 2
    for name, m in metrics.items():
        if isinstance(m, dict) and "bpb" in m:
            print(
                f"{name:<12} bpb {m['bpb']:.3f}  (gzip {m['gzip_bpb']:.3f}, bz2 {m['bz2_bpb']:.3f}, xz {m['xz_bpb']:.3f})"
            )
    print(chat_table(metrics["chat"]))
    print(f"-> {eval_dir(args.profile)}/metrics.json, samples.txt, grounded_samples.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

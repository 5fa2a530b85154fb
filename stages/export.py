"""Stage `export@<profile>`: the profile's best checkpoint (else its last) as an export
folder for inference: artifacts/export/<profile>/{model.safetensors, config.json}, with
the abstain margin the eval stage calibrated for it (metrics.json chat_abstain_margin;
bytechat/eval/refusals.py), when the eval ran.

    python -m stages.export --profile smoke
"""

from __future__ import annotations

import argparse
import json
import sys

from bytechat.core import paths
from bytechat.model.checkpoint import CheckpointError, find_checkpoint
from bytechat.model.export import ModelLoadError, export_checkpoint


def eval_margin(profile: str) -> float | None:
    """chat_abstain_margin of the profile's eval metrics, or None (no eval yet, or one
    taken without faithful decoding)."""
    path = paths.eval_dir(profile) / "metrics.json"
    if not path.is_file():
        return None
    try:
        margin = json.loads(path.read_text(encoding="utf-8")).get("chat_abstain_margin")
    except (UnicodeDecodeError, json.JSONDecodeError, AttributeError) as exc:
        raise ValueError(f"{path}: unreadable eval metrics ({exc})") from None
    return margin


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    args = parser.parse_args()
    try:
        # find_checkpoint validates (checksum included) and skips a damaged best.pt.
        source = find_checkpoint(paths.checkpoints_dir(args.profile))
        out = export_checkpoint(source, paths.export_dir(args.profile), eval_margin(args.profile))
    except (CheckpointError, ModelLoadError, OSError, ValueError) as exc:
        print(f"stages/export.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {source} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

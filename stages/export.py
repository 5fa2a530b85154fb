"""Stage `export@<profile>`: the profile's best checkpoint (else its last) as an export
folder for inference: artifacts/export/<profile>/{model.safetensors, config.json}.

    python -m stages.export --profile smoke
"""

from __future__ import annotations

import argparse
import sys

from bytechat.core import paths
from bytechat.model.checkpoint import CheckpointError, find_checkpoint
from bytechat.model.export import ModelLoadError, export_checkpoint


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", required=True)
    args = parser.parse_args()
    try:
        # find_checkpoint validates (checksum included) and skips a damaged best.pt.
        source = find_checkpoint(paths.checkpoints_dir(args.profile))
        out = export_checkpoint(source, paths.export_dir(args.profile))
    except (CheckpointError, ModelLoadError, OSError) as exc:
        print(f"stages/export.py: error: {exc}", file=sys.stderr)
        return 2
    print(f"exported {source} -> {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

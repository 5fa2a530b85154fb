"""Stage `split`: Roam pages (by whole file) and primer dialogues (by whole block) into
train/val, seeded. Writes artifacts/splits/{roam,primer}_{train,val}.jsonl + manifest.json."""

from __future__ import annotations

import sys

from bytechat.core import paths
from bytechat.core.atomic import write_json, write_jsonl
from bytechat.core.config import ConfigError, load_params
from bytechat.data import primer
from bytechat.notes import roam


def main() -> int:
    try:
        params = load_params()
        seed, val_fraction = params.seed, params.data.val_fraction
        roam_dir, is_example = roam.resolve_roam_dir(paths.roam_dir(), paths.example_roam_dir())
        pages = roam.load_pages(roam_dir)
        roam_train, roam_val = roam.split_pages(pages, seed, val_fraction)
        blocks = primer.load_primer(paths.primer_file())
        primer_train, primer_val = primer.split_blocks(blocks, seed, val_fraction)
    except (ConfigError, roam.RoamError, primer.PrimerError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    splits = paths.splits_dir()
    for name, part in (("roam_train", roam_train), ("roam_val", roam_val)):
        write_jsonl(splits / f"{name}.jsonl", ({"id": p.name, "text": p.document()} for p in part))
    # Ids are positions in primer.txt; looked up by identity, since two dialogues may be equal.
    position = {id(block): i for i, block in enumerate(blocks)}
    for name, part in (("primer_train", primer_train), ("primer_val", primer_val)):
        docs = zip(part, primer.documents(part))
        write_jsonl(splits / f"{name}.jsonl", ({"id": f"dialogue-{position[id(b)]}", "text": doc} for b, doc in docs))
    roam_source = paths.example_roam_dir() if is_example else paths.roam_dir()
    manifest = {
        "seed": seed,
        "roam": {
            "dir": roam_source.relative_to(paths.root()).as_posix(),
            "example_graph": is_example,
            "train": [p.name for p in roam_train],
            "val": [p.name for p in roam_val],
        },
        "primer": {
            "file": paths.primer_file().relative_to(paths.root()).as_posix(),
            "train": len(primer_train),
            "val": len(primer_val),
        },
    }
    write_json(paths.splits_dir() / "manifest.json", manifest)
    print(
        f"roam ({manifest['roam']['dir']}): {len(roam_train)} train / {len(roam_val)} val pages; "
        f"primer: {len(primer_train)} train / {len(primer_val)} val dialogues"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Stage `download`: WikiText -> artifacts/wikitext/{train,validation,test}.txt + source.json.

The rows are written as they are read (flat memory), each split to a temp file renamed at
the end. source.json records which corpus was actually used.
"""

from __future__ import annotations

import sys

from tqdm import tqdm

from bytechat.core import paths
from bytechat.core.atomic import atomic_open, write_json
from bytechat.core.config import ConfigError, load_params
from bytechat.data.wikitext import SPLITS, WikiTextError, iter_rows, open_wikitext


def main() -> int:
    try:
        data = load_params().data
        datasets, source = open_wikitext(data.wikitext_source, data.wikitext_config, data.hub_timeout_s)
        source["requested"] = data.wikitext_source
        stats = {}
        for split in SPLITS:
            n_rows = n_bytes = 0
            with atomic_open(paths.wikitext_dir() / f"{split}.txt", "w", encoding="utf-8", newline="") as fh:
                rows = tqdm(
                    iter_rows(datasets[split]), desc=f"wikitext {split}", unit=" rows", total=len(datasets[split])
                )
                for row in rows:
                    fh.write(row)
                    n_rows += 1
                    n_bytes += len(row.encode("utf-8"))
            if n_bytes == 0:
                raise WikiTextError(f"{source}: split {split} is empty")
            stats[split] = {"rows": n_rows, "bytes": n_bytes}
        write_json(paths.wikitext_dir() / "source.json", {**source, "splits": stats})
    except (ConfigError, WikiTextError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wikitext from {source['kind']}: " + ", ".join(f"{s} {v['bytes']:,} bytes" for s, v in stats.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())

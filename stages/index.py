"""Stage `index`: every page of the notes in use (.roam-data/, else examples/roam/) into
the notes index that chat retrieves from. Writes artifacts/notes/index.sqlite (SQLite
FTS5, see bytechat/notes/index.py) and artifacts/notes/summary.json."""

from __future__ import annotations

import sys
import time

from bytechat.core import paths
from bytechat.core.atomic import write_json
from bytechat.notes import readers, roam
from bytechat.notes.index import NotesIndexError, index_folder


def main() -> int:
    start = time.perf_counter()
    try:
        notes_dir, is_example = roam.resolve_roam_dir(paths.roam_dir(), paths.example_roam_dir())
        notes_format = readers.resolve_format(notes_dir)  # notes.format, or what the folder holds
        index = index_folder(notes_dir, paths.notes_index(), fmt=notes_format)
    except (roam.RoamError, NotesIndexError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with index:
        summary = {
            "source": index.meta["source"],
            "example_graph": is_example,
            "format": notes_format,
            "pages": index.pages,
            "blocks": len(index),
            "fingerprint": index.meta["fingerprint"],
            "index": paths.notes_index().relative_to(paths.root()).as_posix(),
            "index_bytes": paths.notes_index().stat().st_size,
            "seconds": round(time.perf_counter() - start, 3),
        }
    write_json(paths.notes_summary(), summary)
    print(
        f"notes index ({summary['source']}, {notes_format}): {summary['pages']} pages, {summary['blocks']} blocks, "
        f"{summary['index_bytes'] / 1e6:.2f} MB in {summary['seconds']:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

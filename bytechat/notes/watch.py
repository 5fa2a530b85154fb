"""An index that keeps up: watch the notes folder and re-index when a page changes.

The web server (`make serve`) runs a NotesWatcher beside it. watchfiles reports changes
to the folder (batched: a save that touches several files is one re-index); the index is
rebuilt into a temp file and renamed over the index (bytechat.notes.index), opened, and
handed to `swap`, which the server uses to point new requests at it. Requests already
searching keep the index object they hold: its read-only connection still reads the old
file, which stays on disk until the last reader lets go. A re-index that fails (a page
that is not UTF-8 appeared) is logged and the current index stays in use.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Callable

from watchfiles import watch

from bytechat.notes.index import NotesIndex, index_folder, source_name, source_path

log = logging.getLogger("bytechat.notes.watch")

DEBOUNCE_MS = 300  # changes closer than this are one re-index
STEP_MS = 50  # how often watchfiles looks at the batch it is gathering
TIMEOUT_MS = 200  # an empty batch this often: the watch is alive, and stop() is seen


class NotesWatcher:
    """Re-index folder into path whenever it changes, then call swap(new_index)."""

    def __init__(self, folder: str | Path, path: str | Path, swap: Callable[[NotesIndex], None]) -> None:
        self.folder, self.path, self.swap = Path(folder), Path(path), swap
        self.reindexed = 0  # how many re-indexes went through (tests and /health read it)
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notes-watch", daemon=True)

    def start(self) -> NotesWatcher:
        self._thread.start()
        self._ready.wait(5)  # the watch is set up before start returns: no change is missed
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def _run(self) -> None:
        # yield_on_timeout: an empty batch every TIMEOUT_MS, the first of which says the
        # watch is running (start() waits for it, so no change made after start is missed)
        for batch in watch(
            self.folder,
            stop_event=self._stop,
            debounce=DEBOUNCE_MS,
            step=STEP_MS,
            rust_timeout=TIMEOUT_MS,
            yield_on_timeout=True,
        ):
            self._ready.set()
            if batch and not self._stop.is_set():
                self.reindex()

    def reindex(self) -> None:
        start = time.perf_counter()
        try:
            index = index_folder(self.folder, self.path, progress=False)
        except (ValueError, OSError) as exc:  # RoamError, NotesError, NotesIndexError are ValueErrors
            log.error("notes: re-indexing %s failed, the previous index stays: %s", source_name(self.folder), exc)
            return
        self.reindexed += 1
        log.info(
            "notes: re-indexed %s in %.2f s (%d blocks from %d pages)",
            source_name(self.folder),
            time.perf_counter() - start,
            len(index),
            index.pages,
        )
        self.swap(index)


def watch_index(index: NotesIndex, swap: Callable[[NotesIndex], None]) -> NotesWatcher:
    """A started watcher of the folder index was built from, re-indexing into its file."""
    return NotesWatcher(source_path(index.meta["source"]), index.path, swap).start()

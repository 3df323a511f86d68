"""`watch --push`: local changes pushed after a quiet period. It rescans rather than trusting
event paths, since editors save by writing a temporary file and renaming it."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fileconsul.errors import FileconsulError
from fileconsul.model.paths import INTERNAL_DIR, TMP_PREFIX


class LocalPusher:
    """Calls `push` once the tree under `root` has been quiet for `debounce` seconds after a
    change (and once at start, for what changed before)."""

    def __init__(
        self,
        root: Path,
        push: Callable[[], None],
        log: Callable[[str], None],
        debounce: float = 0.5,
    ) -> None:
        from watchdog.observers import Observer

        self.root = root
        self.push = push
        self.log = log
        self.debounce = debounce
        self._changed = threading.Event()
        self._stop = threading.Event()
        self._last = 0.0
        self._observer = Observer()
        self._observer.schedule(_handler(self), str(root), recursive=True)
        self._thread = threading.Thread(target=self._loop, name="fileconsul-push", daemon=True)

    def start(self) -> None:
        self._observer.start()
        self._changed.set()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._observer.stop()
        self._observer.join()
        self._thread.join()

    def touched(self, path: str) -> None:
        parts = os.path.relpath(path, self.root).split(os.sep)
        # A pull stages files in temporary names and temporary new directories.
        if parts[0] == INTERNAL_DIR or any(part.startswith(TMP_PREFIX) for part in parts):
            return
        self._last = time.monotonic()
        self._changed.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._changed.wait(0.1):
                continue
            if time.monotonic() - self._last < self.debounce:
                continue
            self._changed.clear()
            try:
                self.push()
            except FileconsulError as exc:
                self.log(f"push: {exc}")


def _handler(pusher: LocalPusher) -> Any:
    """A watchdog handler that only notes that something under the root moved."""
    from watchdog.events import FileSystemEvent, FileSystemEventHandler

    class Handler(FileSystemEventHandler):
        def on_any_event(self, event: FileSystemEvent) -> None:
            if event.event_type in ("opened", "closed_no_write"):
                return
            if event.is_directory and event.event_type == "modified":
                return
            for path in (event.src_path, event.dest_path):
                if path:
                    pusher.touched(os.fsdecode(path))

    return Handler()

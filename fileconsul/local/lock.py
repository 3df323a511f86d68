"""One fileconsul at a time changes a basepath (a watch and a manual pull, say)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from pathlib import Path

from fileconsul.errors import InvalidInput, LockHeld
from fileconsul.local.record import internal_dir


@contextlib.contextmanager
def local_lock(basepath: Path, wait: float = 30.0) -> Iterator[None]:
    """One fileconsul at a time changes a basepath (a watch and a manual pull, say): wait up
    to `wait` seconds for the other to finish."""
    directory = internal_dir(basepath)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory / "lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise InvalidInput(f"cannot use {directory} ({exc.strerror}): check the basepath") from exc
    try:
        deadline = time.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError as exc:
                if time.monotonic() >= deadline:
                    raise LockHeld(
                        f"another fileconsul process is still working in {basepath}; "
                        "retry when it has finished"
                    ) from exc
                time.sleep(0.05)
        yield
    finally:
        os.close(fd)

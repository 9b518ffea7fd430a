"""One running process per directory: an exclusive, non-blocking `flock` on a lock file,
released by the kernel when the process ends (also by SIGKILL), so a stale lock never
blocks a restart."""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Iterator
from pathlib import Path

POLL_SECONDS = 0.05


@contextlib.contextmanager
def exclusive(path: Path, busy: Exception, wait: float = 0.0) -> Iterator[None]:
    """Hold the lock on `path` while the block runs; `busy` is raised if another process
    holds it (still, after `wait` seconds)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + wait
    with path.open("w") as handle:
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise busy from None
                time.sleep(POLL_SECONDS)
        yield


def is_held(path: Path) -> bool:
    """Whether a process holds the lock on `path` now."""
    if not path.exists():
        return False
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle, fcntl.LOCK_UN)
    return False

"""Leases in one process: a table of name -> (owner, expiry) read on an injectable clock.

For worker nodes sharing a job inside one process (tests, an embedded run), and for
testing lease expiry without sleeping: advance the clock instead.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable


class MemoryLeases:
    """Every lease of one job; call it for the lease of a role as seen by one owner."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._held: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, name: str, owner: str, ttl: float) -> MemoryLease:
        return MemoryLease(self, name, owner, ttl)

    def _live(self, name: str) -> str | None:
        entry = self._held.get(name)
        if entry is None or entry[1] <= self.clock():
            self._held.pop(name, None)
            return None
        return entry[0]

    def _acquire(self, name: str, owner: str, ttl: float) -> bool:
        with self._lock:
            if self._live(name) is not None:
                return False
            self._held[name] = (owner, self.clock() + ttl)
            return True

    def _renew(self, name: str, owner: str, ttl: float) -> bool:
        with self._lock:
            if self._live(name) != owner:
                return False
            self._held[name] = (owner, self.clock() + ttl)
            return True

    def _release(self, name: str, owner: str) -> None:
        with self._lock:
            if self._live(name) == owner:
                del self._held[name]


class MemoryLease:
    def __init__(self, table: MemoryLeases, name: str, owner: str, ttl: float) -> None:
        self._table = table
        self.name = name
        self.owner = owner
        self.ttl = ttl

    def try_acquire(self) -> bool:
        return self._table._acquire(self.name, self.owner, self.ttl)

    def renew(self) -> bool:
        return self._table._renew(self.name, self.owner, self.ttl)

    def release(self) -> None:
        self._table._release(self.name, self.owner)

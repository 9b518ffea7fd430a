"""The memory gate: no new fetch starts while the process tree's RSS is over the limit.

Fetches in flight are what frees memory again, so the gate only holds a new fetch back
while at least one is in flight: with none, it lets one through (progress is guaranteed
even when skyfill's own footprint is near the limit).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import psutil

POLL_SECONDS = 0.1
CACHE_SECONDS = 0.05
FREE_FRACTION = 0.5


class MemoryGate:
    def __init__(self, limit_bytes: int | None, *, children: bool = True) -> None:
        self.limit = limit_bytes
        self._children = children
        """Whether the process has children to count (finding them reads all of /proc)."""
        self._process = psutil.Process()
        self._measured_at = 0.0
        self._rss = 0
        self.peak = 0
        self.waits = 0
        self.in_flight = 0

    def rss(self) -> int:
        """RSS of this process and its children (decoders), cached for a few ms."""
        now = time.monotonic()
        if now - self._measured_at >= CACHE_SECONDS:
            total = self._process.memory_info().rss
            for child in self._process.children(recursive=True) if self._children else ():
                try:
                    total += child.memory_info().rss
                except psutil.Error:
                    continue
            self._rss, self._measured_at = total, now
            self.peak = max(self.peak, total)
        return self._rss

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold a fetch's place: entered once memory is below the limit (or nothing runs)."""
        await self._wait_below()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def _room(self) -> bool:
        """Room for one more fetch: under half the limit any number may run (small repos);
        above it, one at a time, and none above the limit while another one runs."""
        assert self.limit is not None
        rss = self.rss()
        if rss <= self.limit * FREE_FRACTION:
            return True
        return self.in_flight == 0

    async def _wait_below(self) -> None:
        if self.limit is None or self._room():
            return
        self.waits += 1
        while not self._room():
            await asyncio.sleep(POLL_SECONDS)

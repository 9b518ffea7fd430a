"""Time as a seam: what time-driven code (limiters, leases, monitors) reads and waits on.

`SystemClock` is the real thing. `VirtualClock` is time that only moves when told: a test
(or a simulation of a whole network of workers) advances it explicitly, or runs a
coroutine with `run()`, which jumps to the next timer whenever every task is waiting.
Nothing sleeps for real, so a loaded machine changes how long a test takes, never what
it sees.

    clock = VirtualClock()
    limiter = HostLimiter("h", parse_rate("20/10s"), 8, False, clock=clock)
    elapsed = clock.run(take_forty(limiter))   # virtual seconds, exactly

`now()` is epoch seconds (comparable with servers' headers), `monotonic()` a clock for
durations; a virtual clock moves both together.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import math
import time
from collections.abc import Coroutine
from typing import Any, Protocol, TypeVar

T = TypeVar("T")

VIRTUAL_EPOCH = 1_000_000.0
"""Where a virtual clock starts by default (epoch seconds): far from 0, so that code
subtracting a few seconds from `now()` never goes negative."""
SETTLE_ROUNDS = 20
"""Loop passes without any task touching the clock after which `VirtualClock.run` takes
every task to be waiting on a timer (a chain of wake-ups is shorter than this)."""


class Clock(Protocol):
    def now(self) -> float:
        """Seconds since the epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (for durations)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Wait `seconds`."""
        ...

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        """Wait until `event` is set or `timeout` seconds passed; whether it is set."""
        ...


class SystemClock:
    """Wall time and asyncio's own timers."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout=max(timeout, 0.0))
        return event.is_set()


SYSTEM_CLOCK = SystemClock()


class VirtualClock:
    """Time that moves only through `advance` (or `run`, which advances on its own)."""

    def __init__(self, start: float = VIRTUAL_EPOCH) -> None:
        self._now = start
        self._start = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()
        self._touched = 0
        """Bumped by every call: `run` waits for the loop to go quiet before jumping."""

    def now(self) -> float:
        self._touched += 1
        return self._now

    def monotonic(self) -> float:
        self._touched += 1
        return self._now - self._start

    @property
    def elapsed(self) -> float:
        """Virtual seconds since the clock was made."""
        return self._now - self._start

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        timer = self._timer(seconds)
        try:
            await timer
        finally:
            timer.cancel()

    async def wait(self, event: asyncio.Event, timeout: float) -> bool:
        if event.is_set():
            return True
        timer = self._timer(max(timeout, 0.0))
        waiter = asyncio.ensure_future(event.wait())
        try:
            await asyncio.wait({timer, waiter}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            timer.cancel()
            waiter.cancel()
        return event.is_set()

    def next_deadline(self) -> float | None:
        """When the earliest pending timer fires, or None."""
        self._drop_cancelled()
        return self._timers[0][0] if self._timers else None

    async def advance(self, seconds: float) -> None:
        """Move time `seconds` forward, firing every timer due on the way in order, and
        letting the tasks it wakes run (at their timer's time) before going further."""
        target = self._now + seconds
        await self._settle()  # tasks started just before sleep from now, not from later
        while (deadline := self.next_deadline()) is not None and deadline <= target:
            self._fire_next()
            await self._settle()
        self._now = max(self._now, target)
        await self._settle()

    def run(self, main: Coroutine[Any, Any, T], limit: float = 86_400.0) -> T:
        """Run `main` on a new event loop, jumping to the next timer whenever every task
        waits; its result. Fails if `main` still waits after `limit` virtual seconds, or
        waits on something no timer will end (a deadlock). For code that waits only on
        the clock and on other tasks: a wait for a socket or a thread looks like a
        deadlock to it (drive such code with `advance` instead)."""
        return asyncio.run(self._drive(main, limit))

    async def _drive(self, main: Coroutine[Any, Any, T], limit: float) -> T:
        task = asyncio.ensure_future(main)
        while not task.done():
            await self._settle()
            if task.done():
                break
            deadline = self.next_deadline()
            if deadline is None:
                task.cancel()
                raise RuntimeError("every task waits and no timer is pending: a deadlock")
            if deadline - self._start > limit:
                task.cancel()
                raise TimeoutError(f"still waiting after {limit} virtual seconds")
            self._fire_next()
        return task.result()

    def _timer(self, seconds: float) -> asyncio.Future[None]:
        self._touched += 1
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        # A wait too short to move a float this large must still move time, or a caller
        # that waits out a rounding error (1e-12 s of a token) would wait forever.
        deadline = max(self._now + seconds, math.nextafter(self._now, math.inf))
        heapq.heappush(self._timers, (deadline, next(self._seq), future))
        return future

    def _drop_cancelled(self) -> None:
        while self._timers and self._timers[0][2].done():
            heapq.heappop(self._timers)

    def _fire_next(self) -> None:
        deadline, _, future = heapq.heappop(self._timers)
        self._now = max(self._now, deadline)
        if not future.done():
            future.set_result(None)

    async def _settle(self) -> None:
        """Yield to the loop until its tasks stop touching the clock for a while."""
        quiet = 0
        while quiet < SETTLE_ROUNDS:
            before = (self._touched, len(self._timers))
            await asyncio.sleep(0)
            quiet = quiet + 1 if (self._touched, len(self._timers)) == before else 0

"""A host budget shared inside one process: a sliding-window log per host.

The same rule as `redis_budget` (the contract tests run both): slots handed out within
the last window (plus a slot's lifetime) count against the limit, until given back; a
request for more gets what is left, or nothing and the time until the oldest slot leaves
the window (or REFUSED_RETRY, while a slot leased within a lifetime may come back). The
clock is injectable, so windows pass in tests without sleeping.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Sequence

from skyfill.ratelimit.shared import REFUSED_RETRY, Grant, lease_lifetime
from skyfill.ratelimit.spec import RateSpec


class MemoryBudget:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._granted: dict[str, dict[str, float]] = {}
        """Per host: each slot counted, by id, with when it was granted (oldest first)."""
        self._ids = itertools.count()

    def opener(self) -> None:
        """It lives in this process: no other can share it."""
        return None

    async def lease(self, host: str, spec: RateSpec, want: int) -> Grant:
        lifetime = lease_lifetime(spec)
        horizon = spec.window + lifetime
        now = self.clock()
        log = self._granted.setdefault(host, {})
        while log and (oldest := next(iter(log.items())))[1] <= now - horizon:
            del log[oldest[0]]
        grant = min(want, spec.requests - len(log))
        if grant <= 0:
            first = next(iter(log.values()), None)
            wait = max(0.0, first + horizon - now) if first is not None else horizon
            if log and next(reversed(log.values())) > now - lifetime:
                wait = min(wait, REFUSED_RETRY)  # a recent slot may be given back unused
            return Grant(wait=wait)
        slots = tuple(str(next(self._ids)) for _ in range(grant))
        log.update(dict.fromkeys(slots, now))
        return Grant(slots)

    async def give_back(self, host: str, slots: Sequence[str]) -> None:
        log = self._granted.get(host, {})
        for slot in slots:
            log.pop(slot, None)

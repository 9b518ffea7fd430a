"""A host budget shared inside one process: a sliding-window log per host.

The same rule as `redis_budget` (the contract tests run both): slots handed out within
the last window (plus a slot's lifetime) count against the limit; a request for more
gets what is left, or nothing and the time until the oldest slot leaves the window. The
clock is injectable, so windows pass in tests without sleeping.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from skyfill.ratelimit.shared import lease_lifetime
from skyfill.ratelimit.spec import RateSpec


class MemoryBudget:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._granted: dict[str, deque[float]] = {}

    async def lease(self, host: str, spec: RateSpec, want: int) -> tuple[int, float]:
        horizon = spec.window + lease_lifetime(spec)
        now = self.clock()
        log = self._granted.setdefault(host, deque())
        while log and log[0] <= now - horizon:
            log.popleft()
        grant = min(want, spec.requests - len(log))
        if grant <= 0:
            return 0, max(0.0, log[0] + horizon - now) if log else horizon
        log.extend([now] * grant)
        return grant, 0.0

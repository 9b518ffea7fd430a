"""The shared-budget seam: one host's request budget shared by many worker processes.

Each `HostLimiter` still runs its own bucket, server-window mirror and AIMD; with a shared
budget it also needs a slot leased from the budget for every request, so that N workers
together stay within one host's limit. Slots are leased a small block at a time, to keep
the budget's store (Redis) off the path of every request, and expire unused after a
moment, so a leased slot is never spent long after the budget counted it.
"""

from __future__ import annotations

from typing import Protocol

from skyfill.ratelimit.spec import RateSpec

MAX_BLOCK = 16
LEASE_SECONDS = 1.0


class SharedBudget(Protocol):
    async def lease(self, host: str, spec: RateSpec, want: int) -> tuple[int, float]:
        """Take up to `want` slots of `host`'s budget (`spec` requests per window, counted
        over any sliding window); returns (slots granted, seconds until one frees up if
        none was granted)."""
        ...


def lease_block(spec: RateSpec) -> int:
    """Slots leased at once: 1/20 of the window's budget, 1 to 16."""
    return max(1, min(MAX_BLOCK, spec.requests // 20))


def lease_lifetime(spec: RateSpec) -> float:
    """How long a leased slot stays usable: a second, or a quarter of a short window."""
    return min(LEASE_SECONDS, spec.window / 4)

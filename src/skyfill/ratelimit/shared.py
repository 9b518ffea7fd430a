"""The shared-budget seam: one host's request budget shared by many worker processes.

Each `HostLimiter` still runs its own bucket, server-window mirror and AIMD; with a shared
budget it also needs a slot leased from the budget for every request, so that N workers
together stay within one host's limit. Slots are leased a small block at a time, to keep
the budget's store (Redis) off the path of every request, and expire unused after a
moment, so a leased slot is never spent long after the budget counted it.

A slot that expired unused, that a worker holds when it has sent nothing to the host for
IDLE_RETURN, or that it still holds when it closes its limiter, is given back: it no
longer counts against the host; and a lease refused while slots leased in the last moment
may still come back is tried again after REFUSED_RETRY, not after the window. Without
that, a worker that went idle (or finished) held up to a block of each host's budget for
a whole window, and a job that needed the full budget stalled for that window (issue 17:
3000 DIDs at the default 3000/5m waited five minutes at the PLC). A worker killed before
it gives its slots back leaves them counted: the budget errs on the side of the host.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from skyfill.ratelimit.spec import RateSpec

MAX_BLOCK = 16
LEASE_SECONDS = 1.0
IDLE_RETURN = 0.2
"""Seconds without a request for a host after which a worker gives back the slots it holds
for it (a worker whose last DIDs on a host are done holds none of its budget)."""
REFUSED_RETRY = 0.25
"""Seconds after which a refused lease is tried again while some slot of the host was leased
within the last lease lifetime (it may come back, given back unused)."""


@dataclass(frozen=True, slots=True)
class Grant:
    """What a lease got: the granted slots' ids (to give back those never spent), or none
    and the seconds until one frees up."""

    slots: tuple[str, ...] = ()
    wait: float = 0.0

    @property
    def count(self) -> int:
        return len(self.slots)


class SharedBudget(Protocol):
    async def lease(self, host: str, spec: RateSpec, want: int) -> Grant:
        """Take up to `want` slots of `host`'s budget (`spec` requests per window, counted
        over any sliding window)."""
        ...

    async def give_back(self, host: str, slots: Sequence[str]) -> None:
        """Return slots leased here and never spent: they stop counting against `host`."""
        ...

    def opener(self) -> Callable[[], SharedBudget] | None:
        """How another process (a fetch process) opens this budget: a picklable callable,
        or None when the budget lives in this process only."""
        ...


def lease_block(spec: RateSpec) -> int:
    """Slots leased at once: 1/20 of the window's budget, 1 to 16."""
    return max(1, min(MAX_BLOCK, spec.requests // 20))


def lease_lifetime(spec: RateSpec) -> float:
    """How long a leased slot stays usable: a second, or a quarter of a short window."""
    return min(LEASE_SECONDS, spec.window / 4)

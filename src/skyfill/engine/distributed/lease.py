"""The lease seam: at most one holder of a named role at a time, renewed while it works.

Worker nodes decide who plans the next phase, who discovers and who aggregates with
leases. A lease has an owner and a time to live: whoever acquires it first holds it; the
holder renews it in the background (`held`); a holder that dies stops renewing, the lease
expires and another node takes over. Renewal and release act only for the owner, so a
node never extends or drops a lease that has meanwhile passed to another.

Implementations: `redis_lease` (a key with a TTL) and `memory_lease` (one process, an
injectable clock, for tests).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Protocol


class LeaseLost(RuntimeError):
    """The lease expired before its holder renewed it (another node may hold it now)."""


class Lease(Protocol):
    owner: str
    ttl: float
    """Seconds the lease lasts after its last acquisition or renewal."""

    def try_acquire(self) -> bool:
        """Take the lease if nobody holds it; True if this owner holds it now."""
        ...

    def renew(self) -> bool:
        """Restart the time to live if this owner still holds the lease."""
        ...

    def release(self) -> None:
        """Drop the lease if this owner holds it (else do nothing)."""
        ...


class Leases(Protocol):
    def __call__(self, name: str, owner: str, ttl: float) -> Lease:
        """The lease on the role `name` of the job, as seen by `owner`."""
        ...


@contextlib.asynccontextmanager
async def held(lease: Lease) -> AsyncIterator[bool]:
    """Yield whether the lease was acquired; while held, renew it every third of its time
    to live, and release it at the end."""
    if not lease.try_acquire():
        yield False
        return
    keeper = asyncio.ensure_future(_keep(lease))
    try:
        yield True
    finally:
        keeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeper
        lease.release()


async def _keep(lease: Lease) -> None:
    while True:
        await asyncio.sleep(lease.ttl / 3)
        if not await asyncio.to_thread(lease.renew):
            raise LeaseLost(lease.owner)

"""The limiter seam: what an HTTP client needs to pace its requests per host.

A request waits for its turn (`request(host)`), then reports how it went on the ticket it
got: the status and rate-limit headers (`observe`), the bytes received. The limiter
learns each host's limits from those reports. `local.LocalLimiter` implements it in one
process; with a `shared.SharedBudget` (Redis, or in memory) its hosts' budgets are shared
by every worker of a job.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Protocol


class Ticket(Protocol):
    """One admitted request."""

    waited: float
    """Seconds the request waited for its turn."""

    def received(self, size: int) -> None:
        """Count `size` bytes of the answer against its host."""
        ...

    def observe(
        self,
        status: int | None,
        limit: int | None = None,
        remaining: int | None = None,
        reset_at: float | None = None,
        retry_after: float | None = None,
        window: float | None = None,
    ) -> None:
        """Report the answer's status and rate-limit headers (None: no answer)."""
        ...


class Limiter(Protocol):
    def request(self, host: str) -> AbstractAsyncContextManager[Ticket]:
        """Wait for `host`'s turn and a global slot; hold them while the request runs."""
        ...

    def blocked_on_hosts(self, exclude: frozenset[str] = frozenset()) -> int:
        """Requests waiting for a host's turn (not for a global slot), except `exclude`'s."""
        ...

    def snapshot(self) -> dict[str, dict]:
        """Each host's limits, counters and waits, by host name."""
        ...

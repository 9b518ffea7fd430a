"""Trying one idempotent XRPC request again, decided by its error's class alone.

Transient errors (rate_limited, timeout, server_error, network) are tried again after a
backoff; terminal ones are raised at once. A 429 does not spend a try: the host's limiter
already holds every request to that host until the server's reset, so the request simply
gets back in line (up to `max_throttled` times).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from skyfill.errors import RateLimited, SkyfillError, TransientError

T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often, and after how long, a request that failed transiently is sent again."""

    attempts: int = 5
    """Tries of one request before its transient error is raised (1: no retry)."""
    base_seconds: float = 1.0
    """The backoff after the first failed try; it doubles with every further one."""
    max_seconds: float = 60.0
    """The longest backoff, and the longest Retry-After honoured."""
    max_throttled: int = 20
    """429s one request may meet without spending a try."""

    def delay(self, attempt: int, error: SkyfillError) -> float:
        """Seconds to wait after failed try number `attempt` (1-based): the server's
        Retry-After if it gave one, else exponential with jitter."""
        if isinstance(error, TransientError) and error.retry_after is not None:
            return min(error.retry_after, self.max_seconds)
        backoff = min(self.base_seconds * 2 ** (attempt - 1), self.max_seconds)
        return backoff * random.uniform(0.5, 1.0)


NO_RETRY = RetryPolicy(attempts=1, max_throttled=0)
DEFAULT_RETRY = RetryPolicy()


async def with_retries(call: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str) -> T:
    """`await call()`, tried again on transient errors as `policy` says."""
    attempt = throttled = 0
    while True:
        attempt += 1
        try:
            return await call()
        except SkyfillError as error:
            if isinstance(error, RateLimited) and throttled < policy.max_throttled:
                throttled += 1
                attempt -= 1
                continue
            if not error.retryable or attempt >= policy.attempts:
                raise
            delay = policy.delay(attempt, error)
            log.debug(
                "%s: try %d failed (%s), again in %.1f s",
                what,
                attempt,
                error.message,
                delay,
                extra={"event": "request_retry", "error_class": error.error_class},
            )
            await asyncio.sleep(delay)

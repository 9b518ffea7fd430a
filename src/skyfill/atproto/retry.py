"""Trying idempotent work again, decided by its error's class alone: the one retry loop,
for an XRPC query (listings, getLatestCommit) and for one DID's whole fetch alike.

Transient errors (rate_limited, timeout, server_error, network) are tried again after a
backoff; terminal ones, and exceptions that are no SkyfillError, are raised at once. A 429
does not spend a try: the host's limiter already holds every request to that host until
the server's reset, so the request simply gets back in line (up to `max_throttled` times).
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


@dataclass(slots=True)
class Tries:
    """What `with_retries` spent on one call; read it after the call returned or raised."""

    spent: int = 0
    """Tries that counted against `RetryPolicy.attempts` (the last one included)."""
    throttled: int = 0
    """429s that sent the call back in line without spending a try."""


async def with_retries(
    call: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    what: str,
    *,
    event: str = "request_retry",
    tries: Tries | None = None,
) -> T:
    """`await call()`, tried again on transient errors as `policy` says.

    Each retry is logged at debug level as `event`, its message prefixed with `what`;
    `tries`, if given, counts the tries made (also when the call finally raises).
    """
    tries = Tries() if tries is None else tries
    while True:
        tries.spent += 1
        try:
            return await call()
        except SkyfillError as error:
            if isinstance(error, RateLimited) and tries.throttled < policy.max_throttled:
                tries.throttled += 1
                tries.spent -= 1
                continue
            if not error.retryable or tries.spent >= policy.attempts:
                raise
            delay = policy.delay(tries.spent, error)
            log.debug(
                "%s: try %d failed (%s), again in %.1f s",
                what,
                tries.spent,
                error.message,
                delay,
                extra={"event": event, "error_class": error.error_class},
            )
            await asyncio.sleep(delay)

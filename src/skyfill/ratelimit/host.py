"""One host's limiter: token bucket + the server's own window + probing + AIMD.

- Token bucket at the configured rate (burst = one window's worth).
- Once the server has answered with RateLimit-* headers, its window is mirrored: never
  more requests in a window than the server said remain (minus requests still in flight).
- Until the host has answered once, one request at a time (a burst of first requests
  cannot overrun a small limit).
- 429: nothing is sent until Retry-After / RateLimit-Reset.
- Adaptive (AIMD): the rate is cut when the host throttles (429), slows down against its
  usual latency, or fails most requests, and raised again step by step while it answers
  well.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from dataclasses import dataclass, field

from skyfill.clock import SYSTEM_CLOCK, Clock
from skyfill.ratelimit.shared import IDLE_RETURN, SharedBudget, lease_block, lease_lifetime
from skyfill.ratelimit.spec import RateSpec
from skyfill.telemetry.histogram import LatencyHistogram

MIN_FRACTION = 0.05
DECREASE = 0.5
INCREASE_STEP = 0.05
ADJUST_EVERY = 1.0
SLOW_FACTOR = 3.0
BASELINE_QUANTILE = 0.1
"""A host's usual latency, against which it is judged slow: this quantile of all its
answers so far (read again at most every ADJUST_EVERY). Not the fastest answer ever: with
jittery answers that drifts far below the usual, and a host that is merely slow, not
slowing down, was cut to MIN_FRACTION for good (benchmarks/netsim.py found it)."""
ERROR_SHARE = 0.5
"""A 5xx or a request left unanswered cuts the rate only while errors are more than this
share of the host's recent answers (a 429 always does). A host that fails a steady share
of requests whatever the load (a broken disk, a bad repo) is not overloaded: cutting its
rate on every error held it at ~15 % of its limit, so its repos took six times as long
(benchmarks/netsim.py); a host that fails most requests is cut as before."""
ERROR_WEIGHT = 0.1
PROBE_PATIENCE = 1.0
RESET_MARGIN = 0.05
MIN_429_WAIT = 0.5
log = logging.getLogger(__name__)


@dataclass(slots=True)
class HostStats:
    requests: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    rate_limited: int = 0
    errors: int = 0
    wait_seconds: float = 0.0
    latency_ewma: float | None = None
    shared_waits: int = 0
    """Times the shared budget (distributed mode) had no slot free."""
    latency: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Seconds from sending a request to its answer's headers (answered requests only)."""
    bytes_received: int = 0
    no_answer: int = 0
    """Requests that ended without an HTTP answer (timeout, network error)."""


@dataclass(slots=True)
class Observation:
    """What one request taught us about the host."""

    status: int | None
    """HTTP status, or None when the request failed without an answer (timeout, network)."""
    latency: float
    limit: int | None = None
    remaining: int | None = None
    reset_at: float | None = None
    """Epoch seconds when the server's window resets (as the header says: maybe rounded)."""
    retry_after: float | None = None
    window: float | None = None
    """The window's length in seconds, from RateLimit-Policy `w=`."""


class HostLimiter:
    def __init__(
        self,
        host: str,
        spec: RateSpec,
        max_concurrency: int,
        adaptive: bool,
        clock: Clock = SYSTEM_CLOCK,
        budget: SharedBudget | None = None,
    ) -> None:
        self.host = host
        self.budget = budget
        self._leased: deque[tuple[float, str]] = deque()
        """Slots leased from the shared budget and not spent yet, oldest first: (expiry
        time, slot id)."""
        self._returner: asyncio.Task | None = None
        """Gives leased slots back to the budget: those that expire unspent, and all of them
        once the host has had no request for IDLE_RETURN."""
        self._last_take = 0.0
        self.spec = spec
        self.max_concurrency = max_concurrency
        self.adaptive = adaptive
        self.clock = clock
        """What the limiter reads the time from and waits on (`now()`: epoch seconds, as
        the servers' RateLimit-Reset headers are)."""
        self._clock = clock.now
        self.tokens = float(spec.requests)
        self._refilled_at = clock.now()
        self.fraction = 1.0
        self._adjusted_at = 0.0
        self._baseline_latency: float | None = None
        self._baseline_at = 0.0
        self.error_share = 0.0
        """Errors among the host's recent answers (a moving average, ERROR_WEIGHT a step)."""
        self.known = False
        self._probe_started: float | None = None
        self.in_flight = 0
        self.blocked_until = 0.0
        self.window_left: float | None = None
        self.window_reset_at: float | None = None
        """Our upper bound of when the server's current window ends."""
        self._window_header: float | None = None
        self.window_limit: int | None = None
        self.window_length: float | None = None
        self.stats = HostStats()
        self._turn = asyncio.Lock()
        self._changed = asyncio.Event()
        self.waiting = 0

    # -- acquiring -------------------------------------------------------------------------

    async def acquire(self) -> float:
        """Wait until a request may be sent; returns the seconds waited."""
        started = self._clock()
        self.waiting += 1
        try:
            async with self._turn:  # FIFO among this host's waiters
                while True:
                    wait = self._wait_needed()
                    if wait <= 0 and self.budget is not None:
                        wait = await self._lease_slot()
                    if wait <= 0:
                        self._take()
                        break
                    self._changed.clear()
                    await self.clock.wait(self._changed, min(wait, 1.0))
        finally:
            self.waiting -= 1
        waited = self._clock() - started
        self.stats.wait_seconds += waited
        return waited

    async def _lease_slot(self) -> float:
        """0 when a leased slot of the shared budget is ready (spent by `_take`), else the
        seconds until the budget frees one."""
        assert self.budget is not None
        if expired := self._expired(self._clock()):
            await self._give_back(expired)
        if self._leased:
            return 0.0
        grant = await self.budget.lease(self.host, self.spec, lease_block(self.spec))
        expires = self._clock() + lease_lifetime(self.spec)
        self._leased.extend((expires, slot) for slot in grant.slots)
        if grant.slots:
            if self._returner is None:
                self._returner = asyncio.ensure_future(self._return_unspent())
            return 0.0
        self.stats.shared_waits += 1
        return max(grant.wait, 0.01)

    def _expired(self, now: float) -> list[str]:
        """Take the leased slots that expired unspent off the queue."""
        expired = []
        while self._leased and self._leased[0][0] <= now:
            expired.append(self._leased.popleft()[1])
        return expired

    async def _return_unspent(self) -> None:
        """While slots are leased, give back each one that expires unspent, and all of them
        once nothing has been sent to the host for IDLE_RETURN with nobody waiting (a worker
        with nothing left to send there holds none of its budget)."""
        try:
            while self._leased:
                wake = self._leased[0][0]
                if self.waiting == 0:
                    wake = min(wake, self._last_take + IDLE_RETURN)
                await self.clock.sleep(max(0.0, wake - self._clock()))
                now = self._clock()
                if self.waiting == 0 and now >= self._last_take + IDLE_RETURN:  # as `wake`
                    unspent = [slot for _, slot in self._leased]
                    self._leased.clear()
                else:
                    unspent = self._expired(now)
                if unspent:
                    await self._give_back(unspent)
        finally:
            self._returner = None

    async def _give_back(self, slots: list[str]) -> None:
        assert self.budget is not None
        try:
            await self.budget.give_back(self.host, slots)
        except Exception as exc:  # they stay counted until the window passes: only slower
            log.warning("%s: could not give back %d slots: %s", self.host, len(slots), exc)

    async def close(self) -> None:
        """Give every slot still leased back to the shared budget (nothing is sent after)."""
        if self._returner is not None:
            self._returner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._returner
        unspent = [slot for _, slot in self._leased]
        self._leased.clear()
        if unspent:
            await self._give_back(unspent)

    def rate(self) -> float:
        return self.spec.per_second * self.fraction

    def effective_rate(self) -> float:
        """Requests per second allowed now: the bucket's rate, or the server's if lower."""
        rate = self.rate()
        if self.window_limit and self.window_length:
            rate = min(rate, self.window_limit / self.window_length)
        return rate

    def concurrency_cap(self) -> int:
        if not self.known:
            # One request at a time until the host answers; one more per second of silence,
            # so that a first request that hangs does not hold the host forever.
            silent = 0.0 if self._probe_started is None else self._clock() - self._probe_started
            return min(self.max_concurrency, 1 + int(silent / PROBE_PATIENCE))
        return max(1, math.floor(self.max_concurrency * self.fraction))

    def _refill(self, now: float) -> None:
        elapsed = max(0.0, now - self._refilled_at)
        self.tokens = min(float(self.spec.requests), self.tokens + elapsed * self.rate())
        self._refilled_at = now
        if self.window_reset_at is not None and now >= self.window_reset_at:
            # A new window: the server allows its full limit again (it starts counting at
            # the first request); until it answers, send no more than that.
            self.window_left = self.window_limit
            self.window_reset_at = None

    def _wait_needed(self) -> float:
        now = self._clock()
        self._refill(now)
        if now < self.blocked_until:
            return self.blocked_until - now
        if self.in_flight >= self.concurrency_cap():
            return PROBE_PATIENCE if not self.known else 1.0  # or woken early by a release
        if self.window_left is not None and self.window_left < 1:
            if self.window_reset_at is not None:
                return max(0.01, self.window_reset_at - now)
            if self.in_flight > 0:
                return 1.0  # a new window's allowance is all in flight: woken by answers
            self.window_left = None  # no answer will tell us more: the bucket decides
            return self._wait_needed()
        if self.tokens < 1:
            return (1 - self.tokens) / max(self.rate(), 1e-6)
        return 0.0

    def _take(self) -> None:
        if self._probe_started is None:
            self._probe_started = self._clock()
        self.tokens -= 1
        if self._leased:
            self._leased.popleft()  # spent: it stays counted
            self._last_take = self._clock()
        self.in_flight += 1
        self.stats.requests += 1
        if self.window_left is not None:
            self.window_left -= 1

    # -- learning ---------------------------------------------------------------------------

    def release(self, seen: Observation) -> None:
        self.in_flight -= 1
        now = self._clock()
        if seen.status is not None:
            self.known = True
            self.stats.by_status[seen.status] = self.stats.by_status.get(seen.status, 0) + 1
            self.stats.latency.observe(seen.latency)
        else:
            self.stats.no_answer += 1
        self._learn_window(seen, now)
        if seen.status == 429:
            self.stats.rate_limited += 1
            wait = seen.retry_after if seen.retry_after else None
            if wait is None and self.window_reset_at is not None:
                wait = self.window_reset_at - now
            if now >= self.blocked_until:  # once per block, not per refused request
                log.info(
                    "429 from %s: holding its requests for %.1f s",
                    self.host,
                    max(wait or 1.0, MIN_429_WAIT),
                    extra={"event": "rate_limited", "host": self.host},
                )
            self.blocked_until = max(self.blocked_until, now + max(wait or 1.0, MIN_429_WAIT))
            self.window_left = 0
            self.window_reset_at = self.blocked_until  # then a fresh window
            self.tokens = min(self.tokens, 0.0)
        failed = seen.status is None or seen.status >= 500 or seen.status == 429
        self.error_share += ERROR_WEIGHT * (failed - self.error_share)
        if failed:
            self.stats.errors += 1
            if seen.status == 429 or self.error_share > ERROR_SHARE:
                self._decrease(now)
        else:
            self._observe_latency(seen.latency, now)
        self._changed.set()

    def _learn_window(self, seen: Observation, now: float) -> None:
        if seen.remaining is None or seen.reset_at is None:
            return
        if seen.limit is not None:
            self.window_limit = seen.limit
        if seen.window is not None:
            self.window_length = seen.window
        left = seen.remaining - self.in_flight  # unanswered requests may not be counted yet
        new_window = self._window_header is None or abs(seen.reset_at - self._window_header) > 0.5
        if new_window:
            self._window_header = seen.reset_at
            self.window_left = left
            self.window_reset_at = self._reset_bound(seen.reset_at, now)
        else:
            current = self.window_left if self.window_left is not None else left
            self.window_left = min(current, left)
            if self.window_reset_at is None:
                self.window_reset_at = self._reset_bound(seen.reset_at, now)

    def _reset_bound(self, header_reset: float, now: float) -> float:
        """When the window surely has ended. RateLimit-Reset is in whole seconds, rounded up
        by some servers and down by others (the reference PDS): so up to a second later than
        it says; and, with the window's length known, no later than `length` after now (the
        window began at or before this answer). The tighter bound wins."""
        bound = header_reset + 1.0
        if self.window_length is not None:
            bound = min(bound, now + self.window_length)
        return max(bound, now) + RESET_MARGIN

    def _observe_latency(self, latency: float, now: float) -> None:
        stats = self.stats
        stats.latency_ewma = (
            latency if stats.latency_ewma is None else (0.8 * stats.latency_ewma + 0.2 * latency)
        )
        if self._baseline_latency is None or now - self._baseline_at >= ADJUST_EVERY:
            self._baseline_latency = stats.latency.quantile(BASELINE_QUANTILE) or latency
            self._baseline_at = now
        if not self.adaptive:
            return
        slow = stats.latency_ewma > SLOW_FACTOR * self._baseline_latency + 0.25
        if slow:
            self._decrease(now)
        elif now - self._adjusted_at >= ADJUST_EVERY and self.fraction < 1.0:
            self.fraction = min(1.0, self.fraction + INCREASE_STEP)
            self._adjusted_at = now

    def _decrease(self, now: float) -> None:
        if self.adaptive and now - self._adjusted_at >= ADJUST_EVERY:
            self.fraction = max(MIN_FRACTION, self.fraction * DECREASE)
            self._adjusted_at = now

    def snapshot(self) -> dict:
        s = self.stats
        return {
            "requests": s.requests,
            "by_status": {str(k): v for k, v in sorted(s.by_status.items())},
            "rate_limited": s.rate_limited,
            "errors": s.errors,
            "wait_seconds": round(s.wait_seconds, 3),
            "rate_per_s": round(self.effective_rate(), 3),
            "configured_rate": str(self.spec),
            "server_limit": self.window_limit,
            "server_window_s": self.window_length,
            "in_flight": self.in_flight,
            "shared_waits": s.shared_waits,
            "waiting": self.waiting,
            "latency_ms": round(s.latency_ewma * 1000, 1) if s.latency_ewma is not None else None,
            "no_answer": s.no_answer,
            "bytes": s.bytes_received,
            "latency": s.latency.to_dict(),
            **{f"{q}_ms": _ms(v) for q, v in s.latency.summary().items() if q[0] == "p"},
        }


def _ms(seconds: float | int | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)

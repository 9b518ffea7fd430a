"""The in-process limiter: one HostLimiter per host, plus a global concurrency cap.

A request first waits for its host (token, server window, host concurrency), and only
then for a global slot: a slow or throttled host never holds global slots while it waits,
so the other hosts keep going.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from skyfill.clock import SYSTEM_CLOCK, Clock
from skyfill.ratelimit.host import HostLimiter, Observation
from skyfill.ratelimit.shared import SharedBudget
from skyfill.ratelimit.spec import RateSpec, parse_rate

DEFAULT_RATE = "3000/5m"


@dataclass(frozen=True, kw_only=True, slots=True)
class LimitSettings:
    default_rate: RateSpec = field(default_factory=lambda: parse_rate(DEFAULT_RATE))
    host_rates: dict[str, RateSpec] = field(default_factory=dict)
    """Per-host overrides, by host name (or host:port)."""
    host_concurrency: int = 8
    global_concurrency: int = 32
    adaptive: bool = True


@dataclass(slots=True)
class Ticket:
    """One admitted request: report what happened with `observe`."""

    host: HostLimiter
    waited: float
    started: float
    """When it was admitted, on its host's clock (`monotonic()`)."""
    seen: Observation | None = None

    def received(self, size: int) -> None:
        """Count `size` bytes of the answer against its host."""
        self.host.stats.bytes_received += size

    def observe(
        self,
        status: int | None,
        limit: int | None = None,
        remaining: int | None = None,
        reset_at: float | None = None,
        retry_after: float | None = None,
        window: float | None = None,
    ) -> None:
        self.seen = Observation(
            status,
            self.host.clock.monotonic() - self.started,
            limit,
            remaining,
            reset_at,
            retry_after,
            window,
        )


class LocalLimiter:
    def __init__(
        self,
        settings: LimitSettings,
        budget: SharedBudget | None = None,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.clock = clock
        """Every host's clock: a `VirtualClock` runs the limiter without real waits."""
        self.budget = budget
        """Distributed mode: every host's budget, shared with the other workers."""
        self._hosts: dict[str, HostLimiter] = {}
        self._global = asyncio.Semaphore(settings.global_concurrency)
        self.global_waiting = 0

    def host(self, name: str) -> HostLimiter:
        key = name.lower()
        limiter = self._hosts.get(key)
        if limiter is None:
            spec = self.settings.host_rates.get(key) or self.settings.host_rates.get(
                key.split(":")[0], self.settings.default_rate
            )
            limiter = HostLimiter(
                key,
                spec,
                self.settings.host_concurrency,
                self.settings.adaptive,
                clock=self.clock,
                budget=self.budget,
            )
            self._hosts[key] = limiter
        return limiter

    def request(self, host: str) -> _Turn:
        return _Turn(self, self.host(host))

    async def _admit(self, limiter: HostLimiter) -> Ticket:
        """The host's turn, then a global slot (the host's turn given back if that fails)."""
        waited = await limiter.acquire()
        self.global_waiting += 1
        try:
            await self._global.acquire()
        except BaseException:
            limiter.release(Observation(None, 0.0))
            raise
        finally:
            self.global_waiting -= 1
        return Ticket(limiter, waited, self.clock.monotonic())

    def _done(self, ticket: Ticket) -> None:
        self._global.release()
        latency = self.clock.monotonic() - ticket.started
        ticket.host.release(ticket.seen or Observation(None, latency))

    async def close(self) -> None:
        """Give the slots leased from a shared budget and not spent back to it."""
        for limiter in self._hosts.values():
            await limiter.close()

    def blocked_on_hosts(self, exclude: frozenset[str] = frozenset()) -> int:
        """Requests waiting for a host's turn (not for a global slot), except `exclude`'s."""
        return sum(h.waiting for name, h in self._hosts.items() if name not in exclude)

    def snapshot(self) -> dict[str, dict]:
        return {name: h.snapshot() for name, h in sorted(self._hosts.items())}


class _Turn:
    """`LocalLimiter.request`'s context: admitted on entry, the slots given back on exit (a
    class rather than a generator: it wraps every request)."""

    __slots__ = ("_host", "_limiter", "_ticket")

    def __init__(self, limiter: LocalLimiter, host: HostLimiter) -> None:
        self._limiter = limiter
        self._host = host
        self._ticket: Ticket | None = None

    async def __aenter__(self) -> Ticket:
        self._ticket = await self._limiter._admit(self._host)
        return self._ticket

    async def __aexit__(self, *_exc: object) -> None:
        if self._ticket is not None:
            self._limiter._done(self._ticket)


DEFAULT_HOST_RATE = "3000/5m"
"""The reference PDS's limit on reads other than getRepo: a safe default for a host."""


def side_limiter(concurrency: int) -> LocalLimiter:
    """The limiter of a long-running process's side requests (DID documents, re-fetches,
    listings): each host at the default rate, `concurrency` at once per host (twice that
    in all), slowing down when a host says so."""
    return LocalLimiter(
        LimitSettings(
            default_rate=parse_rate(DEFAULT_HOST_RATE),
            host_rates={},
            host_concurrency=concurrency,
            global_concurrency=concurrency * 2,
            adaptive=True,
        )
    )

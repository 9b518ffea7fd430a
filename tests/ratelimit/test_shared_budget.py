"""Workers sharing one host's budget (distributed mode), on a virtual clock: together they
never send more than the budget in any window, and they still use it. The budget here
keeps the same sliding-window log as ratelimit/redis_budget.py, in memory."""

from __future__ import annotations

import asyncio

import pytest

from skyfill.clock import VirtualClock
from skyfill.ratelimit.host import HostLimiter, Observation
from skyfill.ratelimit.shared import lease_lifetime
from skyfill.ratelimit.spec import RateSpec, parse_rate


class LogBudget:
    """A SharedBudget: slots granted over the window plus a slot's lifetime, by time."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.granted: list[float] = []

    async def lease(self, host: str, spec: RateSpec, want: int) -> tuple[int, float]:
        now = self.clock.now()
        horizon = spec.window + lease_lifetime(spec)
        self.granted = [t for t in self.granted if t > now - horizon]
        grant = min(want, spec.requests - len(self.granted))
        if grant <= 0:
            return 0, self.granted[0] + horizon - now
        self.granted += [now] * grant
        return grant, 0.0


def test_four_workers_never_overrun_a_shared_budget() -> None:
    clock = VirtualClock()
    budget = LogBudget(clock)
    spec = parse_rate("6/1s")
    workers = [HostLimiter("h", spec, 8, False, clock=clock, budget=budget) for _ in range(4)]
    sent: list[float] = []

    async def request(host: HostLimiter) -> None:
        await host.acquire()
        sent.append(clock.monotonic())
        await clock.sleep(0.05)
        host.release(Observation(200, 0.05))

    async def scenario() -> None:
        await asyncio.gather(*(request(w) for w in workers for _ in range(15)))

    clock.run(scenario())
    sent.sort()
    assert len(sent) == 60
    busiest = max(sum(1 for u in sent if t <= u < t + 1.0) for t in sent)
    assert busiest <= 6  # each worker's own bucket would allow 4 x 6
    # 6 slots per 1.25 s (the window plus a leased slot's lifetime), used in full: the
    # last six of the 60 go out 9 x 1.25 s in (some a request's latency later)
    assert sent[-1] == pytest.approx(9 * 1.25, abs=0.1)
    assert sum(w.stats.shared_waits for w in workers) > 0

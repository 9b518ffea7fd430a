"""Workers sharing one host's budget (distributed mode), on a virtual clock: together they
never send more than the budget in any window, and they still use it. The budget is
ratelimit/memory_budget.py (the same sliding-window log as the Redis one) reading the
virtual clock."""

from __future__ import annotations

import asyncio

import pytest

from skyfill.clock import VirtualClock
from skyfill.ratelimit.host import HostLimiter, Observation
from skyfill.ratelimit.memory_budget import MemoryBudget
from skyfill.ratelimit.spec import parse_rate


def test_four_workers_never_overrun_a_shared_budget() -> None:
    clock = VirtualClock()
    budget = MemoryBudget(clock.monotonic)
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

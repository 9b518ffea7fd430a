"""The in-process limiter on a virtual clock: hosts wait for their own limits, never for
each other's, and a request only takes a global slot once its host admitted it."""

from __future__ import annotations

import asyncio

import pytest

from skyfill.clock import VirtualClock
from skyfill.ratelimit.local import LimitSettings, LocalLimiter
from skyfill.ratelimit.spec import parse_rate

LATENCY = 0.1


def _fetch_all(limiter: LocalLimiter, hosts: list[str]) -> dict[str, list[float]]:
    """One request per entry of `hosts`, all at once, each answered after LATENCY virtual
    seconds; {host: virtual times its requests were answered, in order}."""
    clock = limiter.clock
    done: dict[str, list[float]] = {}

    async def fetch(host: str) -> None:
        async with limiter.request(host) as ticket:
            await clock.sleep(LATENCY)
            ticket.observe(200)
        done.setdefault(host, []).append(clock.monotonic())

    async def scenario() -> None:
        await asyncio.gather(*(fetch(h) for h in hosts))

    assert isinstance(clock, VirtualClock)
    clock.run(scenario())
    return done


def test_a_throttled_host_does_not_hold_up_the_others() -> None:
    settings = LimitSettings(
        default_rate=parse_rate("1000/1s"),
        host_rates={"slow": parse_rate("2/1s")},
        host_concurrency=4,
        global_concurrency=4,
    )
    limiter = LocalLimiter(settings, clock=VirtualClock())
    # the slow host's requests come first in line: it must not keep the global slots
    done = _fetch_all(limiter, ["slow"] * 20 + [f"fast{i % 4}" for i in range(80)])
    slow = done.pop("slow")
    fast = sorted(t for times in done.values() for t in times)
    assert len(slow) == 20 and len(fast) == 80
    # 2/s from a burst of 2: the slow host's 20th request is sent at 9 s
    assert slow[-1] == pytest.approx(9.0 + LATENCY)
    # four at a time (the global cap), less the slow host's one in flight now and then:
    # the 80 others are done in about 2 virtual seconds, in a third of the slow host's time
    assert fast[-1] < slow[-1] / 3
    assert limiter.snapshot()["slow"]["requests"] == 20


def test_latency_is_measured_on_the_limiters_clock() -> None:
    limiter = LocalLimiter(LimitSettings(adaptive=False), clock=VirtualClock())
    _fetch_all(limiter, ["h"] * 3)
    latency = limiter.host("h").stats.latency
    assert latency.count == 3 and latency.summary()["max"] == pytest.approx(LATENCY, rel=0.05)

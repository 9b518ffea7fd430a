"""The per-host limiter's rules, on a controlled clock: buckets, server windows, probing,
429s and AIMD. (Rates over real time are measured against real servers in the CLI tests.)"""

from __future__ import annotations

import asyncio

import pytest

from skyfill.errors import UsageError
from skyfill.ratelimit.host import HostLimiter, Observation
from skyfill.ratelimit.spec import parse_host_rates, parse_rate


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def _limiter(rate: str = "10/1s", concurrency: int = 4, adaptive: bool = True):
    clock = Clock()
    return HostLimiter("h", parse_rate(rate), concurrency, adaptive, clock=clock), clock


def _ok(latency: float = 0.05, **headers: float) -> Observation:
    return Observation(200, latency, **headers)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "requests", "window"),
    [
        ("3000/5m", 3000, 300.0),
        ("100/1m", 100, 60.0),
        ("20/10s", 20, 10.0),
        ("5/s", 5, 1.0),
        ("1/1h", 1, 3600.0),
    ],
)
def test_rate_specs(text: str, requests: int, window: float) -> None:
    spec = parse_rate(text)
    assert (spec.requests, spec.window) == (requests, window)
    assert parse_rate(str(spec)) == spec


@pytest.mark.parametrize("text", ["", "fast", "0/1s", "10/0s", "10/1d", "-1/1s"])
def test_bad_rate_specs(text: str) -> None:
    with pytest.raises(UsageError):
        parse_rate(text)


def test_host_rates_from_flags_and_mappings() -> None:
    assert parse_host_rates(["A.example=5/1s"]) == {"a.example": parse_rate("5/1s")}
    assert parse_host_rates({"b.example": "1/1m"}) == {"b.example": parse_rate("1/1m")}


def test_an_unknown_host_gets_one_request_at_a_time_then_more_while_silent() -> None:
    host, clock = _limiter()
    assert host._wait_needed() == 0
    host._take()
    assert host._wait_needed() > 0  # the probe is out, the host has not answered
    clock.now += 1.5
    assert host._wait_needed() == 0  # a silent host gets one more request per second
    host.release(_ok())
    assert host.known and host.concurrency_cap() == 4


def test_the_bucket_refills_at_the_rate() -> None:
    host, clock = _limiter("10/1s", concurrency=100)
    host.known = True
    for _ in range(10):
        assert host._wait_needed() == 0
        host._take()
    assert host._wait_needed() == pytest.approx(0.1, abs=1e-6)
    clock.now += 0.5
    assert host._wait_needed() == 0 and host.tokens == pytest.approx(5.0)


def test_the_server_window_is_mirrored_minus_requests_in_flight() -> None:
    host, clock = _limiter("1000/1s", concurrency=100)
    host.known = True
    for _ in range(3):
        host._take()
    host.release(_ok(limit=20, remaining=5, reset_at=clock.now + 10))
    assert host.window_left == 5 - 2  # two requests still unanswered may not be counted yet
    for _ in range(3):
        assert host._wait_needed() == 0
        host._take()
    # Nothing until the window surely reset: the header is whole seconds, maybe rounded down.
    assert host._wait_needed() == pytest.approx(11.05)
    clock.now += 11.1
    for _ in range(20):  # the new window allows the server's limit, and no more, at once
        assert host._wait_needed() == 0
        host._take()
    assert host._wait_needed() > 0


def test_the_window_length_from_the_policy_tightens_the_reset() -> None:
    host, clock = _limiter("1000/1s", concurrency=100)
    host.known = True
    host._take()
    host.release(_ok(limit=2, remaining=1, reset_at=clock.now + 3, window=2))
    host._take()
    assert host._wait_needed() == pytest.approx(2.05)  # now + w beats header + 1


def test_a_429_blocks_the_host_until_retry_after() -> None:
    host, clock = _limiter("1000/1s", concurrency=100)
    host._take()
    host.release(Observation(429, 0.01, retry_after=7))
    assert host.stats.rate_limited == 1
    assert host._wait_needed() == pytest.approx(7.0)
    clock.now += 7.01
    assert host._wait_needed() == 0


def test_aimd_cuts_on_errors_and_slowness_and_recovers() -> None:
    host, clock = _limiter("10/1s")
    host._take()
    host.release(_ok(0.05))
    assert host.fraction == 1.0
    clock.now += 2
    host._take()
    host.release(Observation(503, 0.05))
    assert host.fraction == 0.5 and host.rate() == 5.0
    for _ in range(5):  # it answers well again: additive increase, once per second
        clock.now += 1.1
        host._take()
        host.release(_ok(0.05))
    assert host.fraction == pytest.approx(0.75)
    for _ in range(10):  # latency far above its baseline: cut again
        clock.now += 1.1
        host._take()
        host.release(_ok(2.0))
    assert host.fraction < 0.75


def test_without_adaptive_the_rate_stays() -> None:
    host, clock = _limiter("10/1s", adaptive=False)
    for _ in range(3):
        clock.now += 2
        host._take()
        host.release(Observation(None, 30.0))
    assert host.fraction == 1.0 and host.stats.errors == 3


def test_waiters_are_served_in_order() -> None:
    async def scenario() -> list[int]:
        host = HostLimiter("h", parse_rate("1000/1s"), 1, True)
        host.known = True
        order: list[int] = []

        async def request(n: int) -> None:
            await host.acquire()
            order.append(n)
            await asyncio.sleep(0.01)
            host.release(_ok())

        await asyncio.gather(*(request(n) for n in range(5)))
        return order

    assert asyncio.run(scenario()) == [0, 1, 2, 3, 4]

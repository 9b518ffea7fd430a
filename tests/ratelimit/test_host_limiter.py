"""The per-host limiter's rules on a virtual clock: buckets, server windows, probing, 429s
and AIMD, first as the waits it computes, then as whole runs of requests whose schedule
(in virtual seconds) is exact. Nothing here sleeps or reads the wall clock."""

from __future__ import annotations

import asyncio
import math
import random
from dataclasses import dataclass, field

import pytest

from skyfill.clock import VirtualClock
from skyfill.errors import UsageError
from skyfill.ratelimit.host import HostLimiter, Observation
from skyfill.ratelimit.spec import parse_host_rates, parse_rate


class Clock(VirtualClock):
    """A virtual clock moved by plain assignments in the synchronous tests below
    (`clock.at += 1.5`): they run no event loop, so no timer is pending."""

    @property
    def at(self) -> float:
        return self.now()

    @at.setter
    def at(self, value: float) -> None:
        asyncio.run(self.advance(value - self.now()))


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
    clock.at += 1.5
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
    clock.at += 0.5
    assert host._wait_needed() == 0 and host.tokens == pytest.approx(5.0)


def test_the_server_window_is_mirrored_minus_requests_in_flight() -> None:
    host, clock = _limiter("1000/1s", concurrency=100)
    host.known = True
    for _ in range(3):
        host._take()
    host.release(_ok(limit=20, remaining=5, reset_at=clock.at + 10))
    assert host.window_left == 5 - 2  # two requests still unanswered may not be counted yet
    for _ in range(3):
        assert host._wait_needed() == 0
        host._take()
    # Nothing until the window surely reset: the header is whole seconds, maybe rounded down.
    assert host._wait_needed() == pytest.approx(11.05)
    clock.at += 11.1
    for _ in range(20):  # the new window allows the server's limit, and no more, at once
        assert host._wait_needed() == 0
        host._take()
    assert host._wait_needed() > 0


def test_the_window_length_from_the_policy_tightens_the_reset() -> None:
    host, clock = _limiter("1000/1s", concurrency=100)
    host.known = True
    host._take()
    host.release(_ok(limit=2, remaining=1, reset_at=clock.at + 3, window=2))
    host._take()
    assert host._wait_needed() == pytest.approx(2.05)  # now + w beats header + 1


def test_a_429_blocks_the_host_until_retry_after() -> None:
    host, clock = _limiter("1000/1s", concurrency=100)
    host._take()
    host.release(Observation(429, 0.01, retry_after=7))
    assert host.stats.rate_limited == 1
    assert host._wait_needed() == pytest.approx(7.0)
    clock.at += 7.01
    assert host._wait_needed() == 0


def test_aimd_cuts_on_errors_and_slowness_and_recovers() -> None:
    host, clock = _limiter("10/1s")
    host._take()
    host.release(_ok(0.05))
    assert host.fraction == 1.0
    clock.at += 2
    for _ in range(6):  # errors, not yet most of its recent answers
        host._take()
        host.release(Observation(503, 0.05))
    assert host.fraction == 1.0
    host._take()
    host.release(Observation(503, 0.05))  # now most: cut (once a second at most)
    assert host.fraction == 0.5 and host.rate() == 5.0
    for _ in range(5):  # it answers well again: additive increase, once per second
        clock.at += 1.1
        host._take()
        host.release(_ok(0.05))
    assert host.fraction == pytest.approx(0.75)
    for _ in range(10):  # latency far above its baseline: cut again
        clock.at += 1.1
        host._take()
        host.release(_ok(2.0))
    assert host.fraction < 0.75


def test_a_steady_share_of_errors_is_not_a_reason_to_slow_down() -> None:
    """One request in five fails whatever the load (a broken host, not an overloaded
    one): the rate stays; a 429 still cuts it at once."""
    host, clock = _limiter("10/1s")
    for i in range(100):
        clock.at += 0.3
        host._take()
        host.release(Observation(500, 0.05) if i % 5 == 0 else _ok(0.05))
    assert host.fraction == 1.0 and host.stats.errors == 20
    clock.at += 1.1
    host._take()
    host.release(Observation(429, 0.05, retry_after=1))
    assert host.fraction == 0.5


def test_a_host_slow_by_nature_keeps_its_rate() -> None:
    """Answers take about 1.2 s, a few (small repos) 0.2 s: a slow host, not one slowing
    down. Its fastest answer is no baseline, its usual latency is: the rate stays."""
    host, clock = _limiter("10/1s")
    rng = random.Random(5)
    for i in range(600):
        clock.at += 0.3
        host._take()
        host.release(_ok(0.2 if i % 50 == 0 else 1.2 * rng.lognormvariate(0.0, 0.2)))
    assert host.fraction == 1.0


def test_without_adaptive_the_rate_stays() -> None:
    host, clock = _limiter("10/1s", adaptive=False)
    for _ in range(3):
        clock.at += 2
        host._take()
        host.release(Observation(None, 30.0))
    assert host.fraction == 1.0 and host.stats.errors == 3


# -- whole runs of requests, in virtual time ---------------------------------------------


@dataclass
class WindowServer:
    """A host that counts requests in fixed windows (starting at a window's first request),
    answers with RateLimit-* headers (reset in whole seconds, rounded down as the reference
    PDS does) and refuses with 429 past its limit."""

    clock: VirtualClock
    limit: int
    window: float
    started: float | None = None
    count: int = 0
    per_window: list[int] = field(default_factory=list)
    refused: int = 0

    def answer(self) -> Observation:
        now = self.clock.now()
        if self.started is None or now >= self.started + self.window:
            self.started, self.count = now, 0
            self.per_window.append(0)
        self.count += 1
        reset_at = float(math.floor(self.started + self.window))
        headers = {"limit": self.limit, "reset_at": reset_at, "window": self.window}
        if self.count > self.limit:
            self.refused += 1
            return Observation(429, 0.05, remaining=0, **headers)  # type: ignore[arg-type]
        self.per_window[-1] += 1
        return _ok(remaining=self.limit - self.count, **headers)


def _send_all(
    host: HostLimiter, clock: VirtualClock, n: int, latency: float = 0.0, answer=None
) -> list[float]:
    """`n` requests at once, each answered `latency` virtual seconds after it is sent;
    the virtual times they were sent at, in order."""
    sent: list[float] = []

    async def request() -> None:
        await host.acquire()
        sent.append(clock.monotonic())
        await clock.sleep(latency)
        host.release(answer() if answer else _ok())

    async def scenario() -> None:
        await asyncio.gather(*(request() for _ in range(n)))

    clock.run(scenario())
    return sent


def test_at_20_per_10s_40_requests_take_exactly_10_virtual_seconds() -> None:
    clock = VirtualClock()
    host = HostLimiter("h", parse_rate("20/10s"), 100, False, clock=clock)
    sent = _send_all(host, clock, 40)
    # a full window's burst at once, then one every 0.5 s (20 per 10 s)
    assert sent == pytest.approx([0.0] * 20 + [0.5 * k for k in range(1, 21)], abs=1e-9)
    assert clock.elapsed == pytest.approx(10.0, abs=1e-9)
    assert host.stats.wait_seconds == pytest.approx(sum(sent), abs=1e-6)


def test_a_server_window_is_never_overrun() -> None:
    clock = VirtualClock()
    server = WindowServer(clock, limit=20, window=10.0)
    host = HostLimiter("h", parse_rate("1000/1s"), 8, False, clock=clock)
    sent = _send_all(host, clock, 60, latency=0.05, answer=server.answer)
    assert server.refused == 0 and host.stats.rate_limited == 0
    assert server.per_window == [20, 20, 20]  # every window's allowance used, none exceeded
    # three windows: each next one begins once the last surely reset (its length, learnt
    # from the policy, plus a margin), not a second later as the rounded header alone says
    assert len(sent) == 60 and 20.0 < clock.elapsed < 21.0


def test_a_429_holds_every_request_until_retry_after() -> None:
    clock = VirtualClock()
    host = HostLimiter("h", parse_rate("1000/1s"), 8, False, clock=clock)
    answers = iter([Observation(429, 0.01, retry_after=7)])
    sent = _send_all(host, clock, 4, latency=0.01, answer=lambda: next(answers, _ok()))
    assert sent[0] == 0.0 and sent[1] == pytest.approx(0.01 + 7.0)
    assert min(sent[1:]) >= 7.0 and host.stats.rate_limited == 1


def test_a_silent_host_gets_one_more_request_per_second() -> None:
    clock = VirtualClock()
    host = HostLimiter("h", parse_rate("1000/1s"), 8, False, clock=clock)
    # the first answers take 10 s: until then the host is unknown
    sent = _send_all(host, clock, 3, latency=10.0)
    assert sent == pytest.approx([0.0, 1.0, 2.0])


def test_waiters_are_served_in_order() -> None:
    clock = VirtualClock()
    host = HostLimiter("h", parse_rate("1000/1s"), 1, True, clock=clock)
    host.known = True
    order: list[int] = []

    async def request(n: int) -> None:
        await host.acquire()
        order.append(n)
        await clock.sleep(0.01)
        host.release(_ok())

    async def scenario() -> None:
        await asyncio.gather(*(request(n) for n in range(5)))

    clock.run(scenario())
    assert order == [0, 1, 2, 3, 4]
    assert clock.elapsed == pytest.approx(0.05)  # one at a time, back to back

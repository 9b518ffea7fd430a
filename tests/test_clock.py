"""The clock seam: a virtual clock fires timers in order, only when time is moved, and
`run` jumps from timer to timer while every task waits; the system clock waits for real."""

from __future__ import annotations

import asyncio

import pytest

from skyfill.clock import VIRTUAL_EPOCH, SystemClock, VirtualClock


def test_virtual_time_moves_only_when_advanced() -> None:
    clock = VirtualClock()
    assert (clock.now(), clock.monotonic()) == (VIRTUAL_EPOCH, 0.0)

    async def scenario() -> list[tuple[str, float]]:
        woke: list[tuple[str, float]] = []

        async def sleeper(name: str, seconds: float) -> None:
            await clock.sleep(seconds)
            woke.append((name, clock.monotonic()))

        tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2.0), ("a", 1.0))]
        await clock.advance(0.5)
        assert woke == []  # nothing is due yet, however long the loop runs
        await clock.advance(2.0)
        await asyncio.gather(*tasks)
        return woke

    assert asyncio.run(scenario()) == [("a", 1.0), ("b", 2.0)]  # each at its own time
    assert clock.elapsed == 2.5


def test_a_sleep_started_by_a_woken_task_fires_within_the_same_advance() -> None:
    clock = VirtualClock()

    async def scenario() -> list[float]:
        times: list[float] = []

        async def ticker() -> None:
            for _ in range(4):
                await clock.sleep(1.0)
                times.append(clock.monotonic())

        task = asyncio.create_task(ticker())
        await clock.advance(3.5)
        assert not task.done()
        await clock.advance(0.5)
        await task
        return times

    assert asyncio.run(scenario()) == [1.0, 2.0, 3.0, 4.0]


def test_wait_returns_when_the_event_is_set_or_the_timeout_passes() -> None:
    clock = VirtualClock()

    async def scenario() -> tuple[bool, float, bool, float]:
        event = asyncio.Event()
        timed_out = await clock.wait(event, 5.0)
        after_timeout = clock.monotonic()

        async def set_later() -> None:
            await clock.sleep(2.0)
            event.set()

        setter = asyncio.create_task(set_later())
        was_set = await clock.wait(event, 10.0)
        await setter
        return timed_out, after_timeout, was_set, clock.monotonic()

    assert clock.run(scenario()) == (False, 5.0, True, 7.0)
    assert clock.next_deadline() is None  # the unused 10 s timer was withdrawn


def test_run_jumps_from_timer_to_timer() -> None:
    clock = VirtualClock()

    async def scenario() -> float:
        await asyncio.gather(*(clock.sleep(s) for s in (3600.0, 1.0, 60.0)))
        return clock.monotonic()

    assert clock.run(scenario()) == 3600.0


def test_run_refuses_a_deadlock_and_a_wait_past_its_limit() -> None:
    async def forever() -> None:
        await asyncio.Event().wait()

    with pytest.raises(RuntimeError, match="deadlock"):
        VirtualClock().run(forever())
    clock = VirtualClock()
    with pytest.raises(TimeoutError):
        clock.run(clock.sleep(100.0), limit=10.0)


def test_the_system_clock_waits_for_real() -> None:
    clock = SystemClock()

    async def scenario() -> tuple[bool, bool, float]:
        event = asyncio.Event()
        started = clock.monotonic()
        timed_out = await clock.wait(event, 0.05)
        waited = clock.monotonic() - started
        event.set()
        return timed_out, await clock.wait(event, 10.0), waited

    timed_out, was_set, waited = asyncio.run(scenario())
    assert (timed_out, was_set) == (False, True)
    assert waited >= 0.05  # a lower bound only: a loaded machine waits longer, never less


def test_a_wait_shorter_than_a_float_step_still_moves_time() -> None:
    clock = VirtualClock()

    async def scenario() -> float:
        await clock.sleep(1e-12)  # below the resolution of a float near VIRTUAL_EPOCH
        return clock.now()

    assert clock.run(scenario()) > VIRTUAL_EPOCH

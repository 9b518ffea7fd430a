"""Lanes: the runner opens the oldest task whose host (lane) has room, so a host with many
tasks waiting never fills the task window while other hosts' tasks queue behind it."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from skyfill.engine.discovery import DiscoveryContext
from skyfill.engine.handler import Plan
from skyfill.engine.lanes import TaskLanes
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemOutput, ItemResult, JobStatus
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.sqlite import SqliteStateStore
from tests.engine.squares import SquaresHandler


def _drain(lanes: TaskLanes[str]) -> list[str]:
    taken = []
    while (picked := lanes.pop()) is not None:
        taken.append(picked[0])
    return taken


@pytest.mark.parametrize(
    ("added", "per_lane", "opened"),
    [
        # one lane: only `per_lane` of its tasks open, oldest first
        ([("a1", "a"), ("a2", "a"), ("a3", "a")], 2, ["a1", "a2"]),
        # a full lane is passed over: the next lane's tasks open in their turn
        ([("a1", "a"), ("a2", "a"), ("a3", "a"), ("b1", "b")], 1, ["a1", "b1"]),
        # no lane: never held back, first in first out (a DID file, retries, resume)
        ([("x1", None), ("x2", None), ("a1", "a"), ("x3", None)], 1, ["x1", "x2", "a1", "x3"]),
        ([("a1", "a"), ("b1", "b"), ("a2", "a"), ("b2", "b")], 2, ["a1", "b1", "a2", "b2"]),
    ],
)
def test_the_oldest_task_whose_lane_has_room(
    added: list[tuple[str, str | None]], per_lane: int, opened: list[str]
) -> None:
    lanes = TaskLanes[str](per_lane)
    for task, lane in added:
        lanes.add(task, lane)
    assert _drain(lanes) == opened
    assert len(lanes) == len(added) - len(opened)


def test_a_finished_task_makes_room_in_its_lane() -> None:
    lanes = TaskLanes[str](1)
    for task, lane in [("a1", "a"), ("a2", "a"), ("b1", "b"), ("b2", "b")]:
        lanes.add(task, lane)
    assert _drain(lanes) == ["a1", "b1"]
    lanes.done("b")
    assert _drain(lanes) == ["b2"]
    lanes.done("a")
    lanes.done("a")  # more than were open: still no more than one at once
    assert _drain(lanes) == ["a2"]
    assert not lanes and lanes.pop() is None


class TwoHosts(SquaresHandler):
    """Discovers a slow host's items first (4 batches), then a fast host's (2 batches).
    A slow item finishes only once every fast item is done, or after 3 s (recorded as a
    timeout): with the tasks opened first-in first-out, the slow host's tasks fill the
    window (3 tasks) and the fast ones wait behind them."""

    def __init__(self) -> None:
        super().__init__(0)
        self.slow = [str(n) for n in range(100, 116)]
        self.fast = [str(n) for n in range(200, 208)]
        self.fast_done = asyncio.Event()
        self.done: list[str] = []
        self.timed_out: list[str] = []

    def plan(self) -> Plan:
        return Plan(items=[])

    def discovers(self) -> bool:
        return True

    async def discover(self, ctx: DiscoveryContext) -> None:
        for lane, items in (("slow.example", self.slow), ("fast.example", self.fast)):
            for first in range(0, len(items), 4):
                await ctx.add(items[first : first + 4], lane=lane)
                await asyncio.sleep(0.05)

    async def process(self, batch: Batch, items: list[str]) -> AsyncIterator[ItemOutput]:
        for item in items:
            if item in self.slow:
                try:
                    await asyncio.wait_for(self.fast_done.wait(), 3.0)
                except TimeoutError:
                    self.timed_out.append(item)
            self.done.append(item)
            if set(self.fast) <= set(self.done):
                self.fast_done.set()
            yield ItemOutput(ItemResult(item, "ok"), None)


def test_a_host_with_many_tasks_does_not_hold_the_window(tmp_path: Path) -> None:
    handler = TwoHosts()
    layout = JobLayout(tmp_path, "lanes-1")
    store = SqliteStateStore(layout.state_db)
    settings = EngineSettings(batch_size=4, parallel_tasks=3, max_open_tasks=3, retries=0)
    runner = JobRunner(handler, layout, store, settings)
    runner.submit(handler.plan())
    job = asyncio.run(runner.run())
    assert job.status is JobStatus.COMPLETED
    assert handler.timed_out == []
    assert set(handler.done) == set(handler.slow + handler.fast)
    assert handler.done.index(handler.fast[-1]) < handler.done.index(handler.slow[-1])

"""The runner's task window: beyond `parallel_tasks`, tasks are opened one at a time while
the handler wants more work, each counted by the handler before the next is considered; and
tasks that discovery adds reach the runner without it reading every task again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

from skyfill.engine.distributed.node import NodeSettings, WorkerNode
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemOutput, JobStatus, Task, TaskStatus
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.sqlite import SqliteStateStore
from tests.engine.discovering import DiscoveringSquares
from tests.engine.nodes import SharedInMemory, SqliteNodeStore
from tests.engine.squares import SquaresHandler

WANTED_ITEMS = 12
"""The handler wants more work while it holds fewer items than this."""


class WaitingSquares(SquaresHandler):
    """Squares whose items all wait a moment before they finish; wants more work while it
    holds fewer than WANTED_ITEMS items (as the backfill counts items that can progress)."""

    def __init__(self, count: int) -> None:
        super().__init__(count)
        self.open_items = 0
        self.open_tasks = 0
        self.most_open_tasks = 0

    async def process(self, batch: Batch, items: list[str]) -> AsyncIterator[ItemOutput]:
        self.open_items += len(items)
        self.open_tasks += 1
        self.most_open_tasks = max(self.most_open_tasks, self.open_tasks)
        try:
            await asyncio.sleep(0.3)
            async for output in super().process(batch, items):
                self.open_items -= 1
                yield output
        finally:
            self.open_tasks -= 1

    def wants_more_work(self) -> bool:
        return self.open_items < WANTED_ITEMS


def test_tasks_beyond_the_parallel_ones_open_only_as_the_handler_counts_them(
    tmp_path: Path,
) -> None:
    handler = WaitingSquares(100)
    layout = JobLayout(tmp_path, "window-1")
    store = SqliteStateStore(layout.state_db)
    settings = EngineSettings(
        batch_size=5, parallel_tasks=1, max_open_tasks=50, flush_items=5, retries=0
    )
    runner = JobRunner(handler, layout, store, settings)
    runner.submit(handler.plan())
    job = asyncio.run(runner.run())
    assert job.status is JobStatus.COMPLETED
    assert len(handler.processed) == 100
    # 5 items a task: the third task brings the handler to 15 >= 12 held items. Opening
    # every task at once (before any of them had handed its items over) held all 20.
    assert handler.most_open_tasks == 3


class CountingStore(SqliteStateStore):
    """The SQLite store, counting how often every task of a phase is read."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.task_reads = 0

    def tasks(self, phase: str | None = None, status: TaskStatus | None = None) -> list[Task]:
        self.task_reads += 1
        return super().tasks(phase, status)


def test_tasks_discovery_adds_reach_the_runner_without_reading_every_task_again(
    tmp_path: Path,
) -> None:
    handler = DiscoveringSquares(0, 60)  # 15 pages, 0.1 s apart, each a new task or two
    layout = JobLayout(tmp_path, "discovering-1")
    store = CountingStore(layout.state_db)
    settings = EngineSettings(batch_size=5, parallel_tasks=2, flush_items=2, retries=0)
    runner = JobRunner(handler, layout, store, settings)
    runner.submit(handler.plan())
    job = asyncio.run(runner.run())
    assert job.status is JobStatus.COMPLETED and job.item_count == 60
    assert sorted(handler.processed, key=int) == [str(n) for n in range(1, 61) if n % 11]
    # once for the phase, once to aggregate: not once per turn of the runner's loop (each
    # read costs O(tasks), ~50 ms for a 1M-item job's 10k tasks)
    assert store.task_reads <= 3


class SlowStartStore(SqliteNodeStore):
    """A node's store that takes a moment to mark a task started (a state store far away):
    a task opened now reaches its handler only after that."""

    def start_task(self, task_id: str) -> None:
        time.sleep(0.1)
        super().start_task(task_id)


def test_a_worker_node_opens_tasks_beyond_the_parallel_ones_as_the_runner_does(
    tmp_path: Path,
) -> None:
    """The same window on a distributed worker node: one task at a time beyond
    `parallel_tasks`, the next only once the handler holds the last one's items. Without
    that guard a node claimed tasks faster than its handler could count them (here every
    task while the first ones were starting), holding them from the other nodes."""
    handler = WaitingSquares(100)
    layout = JobLayout(tmp_path, "window-node")
    settings = EngineSettings(
        batch_size=5, parallel_tasks=1, max_open_tasks=50, flush_items=5, retries=0
    )
    planner = SqliteNodeStore(layout.state_db)
    JobRunner(WaitingSquares(100), layout, planner, settings).submit(handler.plan())
    store = SlowStartStore(layout.state_db)
    shared = SharedInMemory(planner)
    node = WorkerNode(
        JobRunner(handler, layout, store, settings),
        store,
        NodeSettings(worker_id="n0", poll_seconds=0.05),
        queue=shared.queue,
        leases=shared.leases,
    )
    job = asyncio.run(node.serve())
    assert job.status is JobStatus.COMPLETED
    assert len(handler.processed) == 100
    assert handler.most_open_tasks == 3
    for s in (planner, store):
        s.close()

"""Every backend of the distributed seams passes the same contract: the task queue, leases,
the claim that fences a replaced run, and the shared rate budget, in memory (on a fake
clock, with the SQLite store) and on a real redis-server (with the Redis store).

On the fake clock time is advanced; on Redis, expiry uses short times and a bounded
wait-until-condition loop (`Backend.eventually`), never a fixed sleep.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import pyarrow.parquet as pq
import pytest

from skyfill.engine.distributed.lease import Leases
from skyfill.engine.distributed.memory_lease import MemoryLeases
from skyfill.engine.distributed.memory_queue import MemoryTaskQueue
from skyfill.engine.distributed.queue import TaskQueue
from skyfill.engine.distributed.redis_lease import RedisLeases
from skyfill.engine.distributed.redis_queue import RedisTaskQueue
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemResult, JobStatus, Role, Task, TaskStatus
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.base import CLAIM, NodeStore, TaskTakenOver
from skyfill.engine.state.redis import RedisStateStore
from skyfill.ratelimit.memory_budget import MemoryBudget
from skyfill.ratelimit.redis_budget import RedisBudget
from skyfill.ratelimit.shared import REFUSED_RETRY, SharedBudget, lease_lifetime
from skyfill.ratelimit.spec import RateSpec
from tests.engine.nodes import SqliteNodeStore, memory_nodes
from tests.engine.squares import SquaresHandler

T = TypeVar("T")
REDIS_WAIT = 10.0
"""The most a Redis test waits for a time-out to pass (it passes in well under a second)."""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Backend:
    name: str
    store: NodeStore
    queue: TaskQueue
    leases: Leases
    budgets: tuple[SharedBudget, SharedBudget]
    """Two holders of one budget (two workers' views of it)."""
    clock: FakeClock | None
    """None: real time (Redis)."""
    idle: float
    """A visibility timeout / lease time to live short enough to wait out."""

    def eventually(self, check: Callable[[], T], after: float) -> T:
        """`check()` once `after` seconds have passed: the fake clock is advanced, or
        (real time) `check` is polled until it holds, for a bounded time."""
        if self.clock is not None:
            self.clock.advance(after)
            return check()
        deadline = time.monotonic() + after + REDIS_WAIT
        while not (got := check()) and time.monotonic() < deadline:
            time.sleep(0.02)
        return got


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "memory":
        clock = FakeClock()
        budget = MemoryBudget(clock)
        yield Backend(
            "memory",
            SqliteNodeStore(tmp_path / "state.db"),
            MemoryTaskQueue(clock),
            MemoryLeases(clock),
            (budget, budget),
            clock,
            idle=30.0,
        )
        return
    store = RedisStateStore.from_url(request.getfixturevalue("redis_url"), uuid.uuid4().hex[:8])
    yield Backend(
        "redis",
        store,
        RedisTaskQueue(store.client, store.keys),
        RedisLeases(store.client, store.keys),
        (RedisBudget(store.client), RedisBudget(store.client)),
        None,
        idle=0.2,
    )
    store.close()


# -- queue ------------------------------------------------------------------------------------


def test_claim_ack_and_requeue(backend: Backend) -> None:
    q = backend.queue
    q.requeue(["t1", "t2"])
    first = q.claim("a")
    second = q.claim("b")
    assert first is not None and second is not None
    assert (first.task_id, second.task_id, first.deliveries) == ("t1", "t2", 1)
    assert q.claim("a") is None, "each task goes to one consumer"
    q.ack(first)
    got = backend.eventually(lambda: q.reclaim("c", backend.idle), after=backend.idle * 1.5)
    assert got is not None and got.task_id == "t2", "an acknowledged task never comes back"
    q.requeue(["t3"])  # drops t2, claimed by `c`
    third = q.claim("a")
    assert third is not None and third.task_id == "t3"
    assert q.claim("a") is None
    again = backend.eventually(lambda: q.reclaim("c", backend.idle), after=backend.idle * 1.5)
    assert again is not None and again.task_id == "t3", "requeue dropped the old claims"


def test_an_idle_claim_is_reclaimed_but_an_extended_one_is_not(backend: Backend) -> None:
    q = backend.queue
    q.requeue(["t1", "t2"])
    stale, kept = q.claim("a"), q.claim("a")
    assert stale is not None and kept is not None
    assert q.reclaim("b", backend.idle) is None, "nothing is idle yet"

    def reclaimed() -> Any:
        q.extend("a", [kept])  # `a` keeps the second one alive, not the first
        return q.reclaim("b", backend.idle)

    got = backend.eventually(reclaimed, after=backend.idle * 1.5)
    assert got is not None
    assert (got.task_id, got.message_id, got.deliveries) == ("t1", stale.message_id, 2)
    q.extend("a", [kept])
    assert q.reclaim("c", backend.idle) is None, "the extended claim stays with its holder"
    q.ack(got)
    q.ack(kept)


# -- leases -----------------------------------------------------------------------------------


def test_a_lease_has_one_holder_renewed_and_released_by_its_owner(backend: Backend) -> None:
    mine = backend.leases("advance:backfill", "a", 30.0)
    theirs = backend.leases("advance:backfill", "b", 30.0)
    other_role = backend.leases("aggregate", "b", 30.0)
    assert mine.try_acquire()
    assert not theirs.try_acquire()
    assert other_role.try_acquire(), "each role has its own lease"
    assert mine.renew() and not theirs.renew()
    theirs.release()  # not the owner: nothing happens
    assert not theirs.try_acquire()
    mine.release()
    assert theirs.try_acquire()
    assert not mine.renew()


def test_an_expired_lease_passes_to_another(backend: Backend) -> None:
    mine = backend.leases("aggregate", "a", backend.idle)
    theirs = backend.leases("aggregate", "b", backend.idle)
    assert mine.try_acquire()
    assert backend.eventually(theirs.try_acquire, after=backend.idle * 1.5)
    assert not mine.renew(), "the old holder cannot renew what passed to another"
    mine.release()
    assert not mine.try_acquire(), "nor release it"


# -- the claim that fences a replaced run --------------------------------------------------------


def test_a_run_whose_claim_was_replaced_cannot_commit_or_finish(backend: Backend) -> None:
    store = backend.store
    batch = Batch("batch-0001", "backfill", "initial_batch", ("a", "b"))
    store.create_job(
        "job-1",
        "squares",
        "x:Y",
        {},
        [batch],
        [Task("t1", "batch-0001", Role.WORKER, "backfill", "initial_batch")],
    )
    store.claim_task("t1", "node-1/run")
    store.claim_task("t1", "node-2/run")  # node-1 went silent; node-2 reclaimed the task

    def as_run(token: str | None, write: Callable[[], None]) -> None:
        context = contextvars.copy_context()
        context.run(CLAIM.set, token)
        context.run(write)

    def commit() -> None:
        store.commit_items("t1", [ItemResult("a", "ok")], [1], None)

    def finish() -> None:
        store.finish_task(
            "t1", TaskStatus.DONE, output_file=None, row_count=1, sha256=None, metrics={}
        )

    for write in (commit, finish):
        with pytest.raises(TaskTakenOver):
            as_run("node-1/run", write)
    assert store.status_counts() == {"pending": 2}
    as_run("node-2/run", commit)
    as_run(None, finish)  # a runner on one machine claims nothing and is never fenced
    assert store.status_counts() == {"ok": 1, "pending": 1}
    task = store.task("t1")
    assert task is not None and task.status is TaskStatus.DONE


# -- the shared budget ----------------------------------------------------------------------------


def _drain(budgets: tuple[SharedBudget, SharedBudget], host: str, spec: RateSpec) -> int:
    """Lease from both holders in turn until neither gets a slot; the slots granted."""

    async def go() -> int:
        total, refused = 0, 0
        while refused < 2:
            for budget in budgets:
                grant = await budget.lease(host, spec, 3)
                total += grant.count
                refused = refused + 1 if grant.count == 0 else 0
                assert grant.count > 0 or grant.wait > 0
        return total

    return asyncio.run(go())


def test_two_holders_of_a_budget_never_exceed_its_limit(backend: Backend) -> None:
    host = f"pds-{uuid.uuid4().hex[:6]}.test"
    hour = RateSpec(10, 3600.0)
    assert _drain(backend.budgets, host, hour) == 10
    if backend.clock is not None:
        backend.clock.advance(1800.0)
        assert _drain(backend.budgets, host, hour) == 0, "still within the window"
    short = RateSpec(10, 1.0)
    other = f"pds-{uuid.uuid4().hex[:6]}.test"
    assert _drain(backend.budgets, other, short) == 10
    again = backend.eventually(
        lambda: asyncio.run(backend.budgets[1].lease(other, short, 1)).count,
        after=short.window + lease_lifetime(short) + 0.05,
    )
    assert again == 1, "the window moved on: slots free up again"


def test_slots_given_back_count_no_more(backend: Backend) -> None:
    """A holder gives back slots it never spent: the other holder gets them at once."""
    host = f"pds-{uuid.uuid4().hex[:6]}.test"
    hour = RateSpec(10, 3600.0)
    first, second = backend.budgets

    async def go() -> tuple[int, int]:
        held = await first.lease(host, hour, 10)
        refused = await second.lease(host, hour, 1)
        await first.give_back(host, held.slots[4:])  # 4 spent, 6 never
        again = await second.lease(host, hour, 10)
        return refused.count, again.count

    assert asyncio.run(go()) == (0, 6)


def test_a_refused_lease_is_retried_soon_only_while_a_recent_slot_may_come_back(
    backend: Backend,
) -> None:
    host = f"pds-{uuid.uuid4().hex[:6]}.test"
    hour = RateSpec(10, 3600.0)
    first, second = backend.budgets

    def refused_wait() -> float:
        grant = asyncio.run(second.lease(host, hour, 1))
        assert grant.count == 0
        return grant.wait

    assert asyncio.run(first.lease(host, hour, 10)).count == 10
    assert refused_wait() <= REFUSED_RETRY, "the 10 slots were just leased: some may come back"
    later = backend.eventually(lambda: refused_wait() > 60, after=lease_lifetime(hour))
    assert later, "past a slot's lifetime, only the window frees one"


# -- worker nodes in one process -------------------------------------------------------------------


def test_two_nodes_share_a_job_in_memory(tmp_path: Path) -> None:
    """Two WorkerNodes, one SQLite file, one in-memory queue, leases and budget."""
    layout = JobLayout(tmp_path, "squares-mem")
    settings = EngineSettings(batch_size=5, parallel_tasks=2, flush_items=2, retries=1)
    handlers = [SquaresHandler(23) for _ in range(2)]
    planner, pairs = memory_nodes(layout, handlers, settings, poll_seconds=0.05)
    JobRunner(SquaresHandler(23), layout, planner, settings).submit(SquaresHandler(23).plan())
    nodes, stores = [n for n, _ in pairs], [s for _, s in pairs]

    async def serve_all() -> list:
        return await asyncio.gather(*(node.serve() for node in nodes))

    ended = asyncio.run(serve_all())
    assert all(job.status is JobStatus.COMPLETED for job in ended)
    backfill = sorted((p for h in handlers for p in h.processed), key=int)
    assert {str(n) for n in range(1, 24)} <= set(backfill)
    assert planner.status_counts() == {"ok": 20, "failed": 3}
    assert sum(node.tasks_done for node in nodes) >= 5
    assert all(s.beats[f"n{i}"]["state"] == "stopped" for i, s in enumerate(stores))
    table = pq.read_table(layout.output / "all.parquet")
    assert table.num_rows == sum(n for n in range(1, 24) if n % 7)
    for store in [planner, *stores]:
        store.close()

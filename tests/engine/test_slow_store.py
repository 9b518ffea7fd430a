"""A slow state store does not stall the fetches: commits run off the event loop.

The store is a real one (SQLite on a file, Redis on a real server), made slow by its
`state_commit` failpoint (every commit sleeps, as on a slow disk or a distant store). The
job type's items stand in for fetches: each waits a moment on the event loop, at most
`CONCURRENCY` at once. If a commit ran on the event loop, no item could start while it
lasted; off the loop, the fetches go on at full concurrency while commits are in flight.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from skyfill.engine.handler import AggregateContext, Plan
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemOutput, ItemResult, JobStatus
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.redis import RedisStateStore
from skyfill.engine.state.sqlite import SqliteStateStore

CONCURRENCY = 8
COMMIT_SECONDS = 0.25
SCHEMA = pa.schema([("key", pa.string()), ("rev", pa.int64())])


class Watched:
    """Remembers when each commit of item outcomes ran (mixed into a real store)."""

    windows: list[tuple[float, float]]
    committing: threading.Event

    def watch(self) -> None:
        self.windows = []
        self.committing = threading.Event()

    def commit_items(self, *args: Any, **kwargs: Any) -> None:
        started = time.monotonic()
        self.committing.set()
        try:
            super().commit_items(*args, **kwargs)  # type: ignore[misc]
        finally:
            self.committing.clear()
            self.windows.append((started, time.monotonic()))


class WatchedSqlite(Watched, SqliteStateStore):
    pass


class WatchedRedis(Watched, RedisStateStore):
    pass


WatchedStore = WatchedSqlite | WatchedRedis


class Fetches:
    """A job type whose items are fake fetches: 20 ms each, CONCURRENCY at a time."""

    job_type = "fetches"
    output_schema = SCHEMA
    dedup_key = ("key",)
    newest_column = "rev"

    def __init__(self, count: int, store: WatchedStore) -> None:
        self.count = count
        self.store = store
        self.in_flight = 0
        self.starts: list[float] = []
        self.in_flight_while_committing = 0
        self._slots = asyncio.Semaphore(CONCURRENCY)

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Fetches:
        raise NotImplementedError  # built directly by the test

    def config_dict(self) -> dict[str, Any]:
        return {"count": self.count}

    def plan(self) -> Plan:
        return Plan(items=[f"item-{i:04d}" for i in range(self.count)])

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def process(self, batch: Batch, items: list[str]) -> AsyncIterator[ItemOutput]:
        for done in asyncio.as_completed([self._fetch(item) for item in items]):
            yield await done

    async def _fetch(self, item: str) -> ItemOutput:
        async with self._slots:
            self.in_flight += 1
            self.starts.append(time.monotonic())
            if self.store.committing.is_set():
                self.in_flight_while_committing = max(
                    self.in_flight_while_committing, self.in_flight
                )
            await asyncio.sleep(0.02)
            self.in_flight -= 1
        rows = pa.table({"key": [item], "rev": [1]}, schema=SCHEMA)
        return ItemOutput(ItemResult(item, "ok"), rows)

    def wants_more_work(self) -> bool:
        return False

    def live_stats(self) -> dict[str, Any]:
        return {}

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        return {"rows": ctx.rows.read_all().num_rows}


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[WatchedStore]:
    backend: WatchedStore
    if request.param == "sqlite":
        backend = WatchedSqlite(JobLayout(tmp_path, "slow-store").state_db)
    else:
        url = request.getfixturevalue("redis_url")
        backend = WatchedRedis.from_url(url, f"slow-store-{uuid.uuid4().hex[:8]}")
    backend.watch()
    yield backend
    backend.close()


def test_fetches_go_on_at_full_concurrency_while_a_slow_store_commits(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store: WatchedStore
) -> None:
    monkeypatch.setenv("SKYFILL_FAILPOINT", f"state_commit:every:sleep={COMMIT_SECONDS}")
    layout = JobLayout(tmp_path, "slow-store")
    handler = Fetches(240, store)
    # Two tasks of 120 items, each committing every 10 finished items.
    settings = EngineSettings(batch_size=120, parallel_tasks=2, flush_items=10, retries=0)
    runner = JobRunner(handler, layout, store, settings)
    runner.submit(handler.plan())
    job = asyncio.run(runner.run())

    assert job.status is JobStatus.COMPLETED
    assert store.status_counts() == {"ok": 240}
    assert len(store.windows) >= 10  # the store was slow often: 0.25 s per commit
    inset = 0.02  # a fetch started just before a commit began is not counted
    during = [t for t in handler.starts if any(a + inset < t < b - inset for a, b in store.windows)]
    # On the loop, a commit would hold back every start for its 0.25 s: none inside.
    assert len(during) >= CONCURRENCY * 3
    assert handler.in_flight_while_committing == CONCURRENCY

"""The engine with a second, tiny job type: plan, per-item checkpoints, stop and resume."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skyfill.engine.handler import AggregateContext, Plan
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemOutput, ItemResult, JobStatus, TaskStatus
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.sqlite import SqliteStateStore

SCHEMA = pa.schema([("n", pa.int64()), ("i", pa.int64()), ("square", pa.int64())])


class SquaresHandler:
    """Item "n" produces n rows (i, i*i); multiples of 7 fail terminally."""

    job_type = "squares"
    output_schema = SCHEMA
    dedup_key = ("n", "i")
    newest_column = "square"

    def __init__(
        self, count: int, stop_after: int | None = None, stop: asyncio.Event | None = None
    ) -> None:
        self.count = count
        self.processed: list[str] = []
        self._stop_after, self._stop = stop_after, stop

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SquaresHandler:
        return cls(int(config["count"]))

    def config_dict(self) -> dict[str, Any]:
        return {"count": self.count, "batch_size": 5, "parallel_tasks": 2, "flush_items": 2}

    def plan(self) -> Plan:
        return Plan(items=[str(i) for i in range(1, self.count + 1)])

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def process(self, batch: Batch, items: list[str]) -> AsyncIterator[ItemOutput]:
        for item in items:
            await asyncio.sleep(0)
            self.processed.append(item)
            if self._stop_after is not None and len(self.processed) >= self._stop_after:
                assert self._stop is not None
                self._stop.set()
            n = int(item)
            if n % 7 == 0:
                yield ItemOutput(ItemResult(item, "failed", "bad_luck", "sevens fail"))
                continue
            rows = pa.table(
                {"n": [n] * n, "i": list(range(n)), "square": [i * i for i in range(n)]},
                schema=SCHEMA,
            )
            yield ItemOutput(ItemResult(item, "ok", metrics={"api_requests": 1}), rows)

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        table = ctx.rows.read_all()
        ctx.layout.output.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, ctx.layout.output / "all.parquet")
        return {"total_rows": table.num_rows}


def _runner(tmp_path: Path, handler: SquaresHandler) -> tuple[JobRunner, SqliteStateStore]:
    layout = JobLayout(tmp_path, "squares-1")
    store = SqliteStateStore(layout.state_db)
    settings = EngineSettings(batch_size=5, parallel_tasks=2, flush_items=2, retries=0)
    return JobRunner(handler, layout, store, settings), store


def _expected_rows(count: int) -> int:
    return sum(n for n in range(1, count + 1) if n % 7)


def test_a_second_job_type_runs_through_the_engine(tmp_path: Path) -> None:
    handler = SquaresHandler(23)
    runner, store = _runner(tmp_path, handler)
    runner.submit(handler.plan())
    job = asyncio.run(runner.run())
    assert job.status is JobStatus.COMPLETED
    assert sorted(handler.processed, key=int) == [str(i) for i in range(1, 24)]
    assert store.status_counts() == {"ok": 20, "failed": 3}
    assert [t.status for t in store.tasks()] == [TaskStatus.DONE] * 5
    table = pq.read_table(runner.layout.output / "all.parquet")
    assert table.num_rows == _expected_rows(23)
    assert store.task_item_metrics("task-0000") == {
        "dids_processed": 5,
        "records": 15,
        "api_requests": 5,
    }


def test_stopped_job_resumes_without_redoing_committed_items(tmp_path: Path) -> None:
    first = SquaresHandler(40)
    runner, store = _runner(tmp_path, first)
    runner.submit(first.plan())
    first._stop = runner.stop_requested
    first._stop_after = 12
    job = asyncio.run(runner.run())
    assert job.status is JobStatus.STOPPED
    committed = {r.key for r in store.iter_items() if r.status != "pending"}
    assert 0 < len(committed) < 40
    store.close()

    second = SquaresHandler(40)
    runner2, _ = _runner(tmp_path, second)
    job = asyncio.run(runner2.run())
    assert job.status is JobStatus.COMPLETED
    assert not committed & set(second.processed)
    assert committed | set(second.processed) == {str(i) for i in range(1, 41)}
    assert pq.read_table(runner2.layout.output / "all.parquet").num_rows == _expected_rows(40)


def test_submitting_twice_is_refused(tmp_path: Path) -> None:
    from skyfill.errors import UsageError

    handler = SquaresHandler(3)
    runner, _ = _runner(tmp_path, handler)
    runner.submit(handler.plan())
    with pytest.raises(UsageError, match="already exists"):
        runner.submit(handler.plan())

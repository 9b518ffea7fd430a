"""The engine with a second, tiny job type: plan, per-item checkpoints, stop and resume."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemOutput, ItemResult, JobStatus, SpilledRows, TaskStatus
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.storage.merge import MergeSpec, sort_table
from tests.engine.discovering import DiscoveringSquares
from tests.engine.squares import SquaresHandler


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
        "items_processed": 5,
        "rows": 15,
        "api_requests": 5,
    }


def test_the_runner_records_a_timeline(tmp_path: Path) -> None:
    handler = SquaresHandler(23)
    runner, store = _runner(tmp_path, handler)
    runner.submit(handler.plan())
    asyncio.run(runner.run())
    samples = store.samples()
    assert len(samples) >= 2  # the end of the run, then the completed job
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    last = samples[-1]
    assert last["status"] == "completed" and last["phase"] == "aggregate"
    assert last["items"] == {"ok": 20, "failed": 3}
    assert last["tasks"] == {"done": 5}
    assert last["run"].endswith(f":{os.getpid()}")


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


def _found_rows(first: int, last: int) -> int:
    return sum(n for n in range(first, last + 1) if n % 7 and n % 11)


def test_items_discovered_while_the_job_runs(tmp_path: Path) -> None:
    handler = DiscoveringSquares(3, 30)
    runner, store = _runner(tmp_path, handler)
    runner.submit(handler.plan())
    job = asyncio.run(runner.run())
    assert job.status is JobStatus.COMPLETED and job.item_count == 33
    assert handler.pages_listed == list(range(4, 34, 4))
    counts = store.status_counts()
    assert counts["gone"] == 3 and "pending" not in counts  # 11, 22, 33: never processed
    assert not {"11", "22", "33"} & set(handler.processed)
    assert handler.found_processed_while_listing, "no waiting for the full list"
    table = pq.read_table(runner.layout.output / "all.parquet")
    assert table.num_rows == _expected_rows(3) + _found_rows(4, 33)
    assert store.get_stats("discovery")["done"] is True


def test_discovery_resumes_from_its_saved_position(tmp_path: Path) -> None:
    first = DiscoveringSquares(0, 40, stop_after_pages=3)
    runner, store = _runner(tmp_path, first)
    first.stop = runner.stop_requested
    runner.submit(first.plan())
    job = asyncio.run(runner.run())
    assert job.status is JobStatus.STOPPED
    assert first.pages_listed == [1, 5, 9]
    assert store.get_stats("discovery")["position"] == {"next": 13}

    second = DiscoveringSquares(0, 40)
    runner, store = _runner(tmp_path, second)
    job = asyncio.run(runner.run())
    assert job.status is JobStatus.COMPLETED and job.item_count == 40
    assert second.pages_listed == [13, 17, 21, 25, 29, 33, 37]  # no page listed twice
    table = pq.read_table(runner.layout.output / "all.parquet")
    assert table.num_rows == _found_rows(1, 40)


class SharedFileSquares(SquaresHandler):
    """Writes each batch's rows to one file in its scratch directory, shared by the items
    that have rows (as a fetch process does): the failures first, then those items."""

    def __init__(self, count: int, stop_at_member: int | None = None) -> None:
        super().__init__(count)
        self.stop_at_member = stop_at_member
        self.files: list[Path] = []

    async def process(self, batch: Batch, items: list[str]) -> AsyncIterator[ItemOutput]:
        outputs = [o async for o in super().process(batch, items)]
        holding = [o for o in outputs if o.rows is not None]
        assert batch.scratch is not None
        batch.scratch.mkdir(parents=True, exist_ok=True)
        path = batch.scratch / f"shared-{len(self.files)}.parquet"
        self.files.append(path)
        spec = MergeSpec(key_columns=self.dedup_key, newest_column=self.newest_column)
        pq.write_table(sort_table(pa.concat_tables([o.rows for o in holding]), spec), path)
        for output in outputs:
            if output.rows is None:
                yield output
        for member, output in enumerate(holding, 1):
            if member == self.stop_at_member and self._stop is not None:
                self._stop.set()
                await asyncio.sleep(0.01)  # the engine sees the stop before the rest
            shared = SpilledRows(path, output.rows.num_rows, items=len(holding))
            yield ItemOutput(output.result, None, shared)


def test_items_sharing_a_file_are_committed_with_it_as_one_segment(tmp_path: Path) -> None:
    handler = SharedFileSquares(23)
    runner, store = _runner(tmp_path, handler)
    runner.submit(handler.plan())
    assert asyncio.run(runner.run()).status is JobStatus.COMPLETED
    assert store.status_counts() == {"ok": 20, "failed": 3}
    table = pq.read_table(runner.layout.output / "all.parquet")
    assert table.num_rows == _expected_rows(23)
    assert sorted(zip(table["n"].to_pylist(), table["i"].to_pylist(), strict=True)) == sorted(
        (n, i) for n in range(1, 24) if n % 7 for i in range(n)
    )
    assert store.task_item_metrics("task-0000")["rows"] == 15


def test_a_stop_inside_a_shared_file_commits_none_of_its_items(tmp_path: Path) -> None:
    first = SharedFileSquares(10, stop_at_member=3)
    runner, store = _runner(tmp_path, first)
    runner.submit(first.plan())
    first._stop = runner.stop_requested
    assert asyncio.run(runner.run()).status is JobStatus.STOPPED
    committed = {r.key for r in store.iter_items() if r.status != "pending"}
    assert not committed & {"1", "2", "3", "4", "5"}, "a part of the file was committed"
    store.close()

    second = SharedFileSquares(10)
    runner2, _ = _runner(tmp_path, second)
    assert asyncio.run(runner2.run()).status is JobStatus.COMPLETED
    assert {"1", "2", "3", "4", "5"} <= set(second.processed)
    table = pq.read_table(runner2.layout.output / "all.parquet")
    assert table.num_rows == _expected_rows(10)


class Interleaving(SharedFileSquares):
    async def process(self, batch: Batch, items: list[str]) -> AsyncIterator[ItemOutput]:
        outputs = [o async for o in super().process(batch, items)]
        yield outputs[-1]  # a member of a shared file, then an output of another kind
        yield ItemOutput(ItemResult("x", "failed", "bad_luck", "out of place"))


def test_a_shared_file_whose_items_do_not_come_together_is_refused(tmp_path: Path) -> None:
    handler = Interleaving(4)
    runner, _ = _runner(tmp_path, handler)
    runner.submit(handler.plan())
    with pytest.raises(RuntimeError, match="must come one after another"):
        asyncio.run(runner.run())

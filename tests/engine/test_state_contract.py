"""Every StateStore backend passes the same contract (SQLite on a file, Redis on a real server)."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from skyfill.engine.model import (
    Batch,
    InvalidTransition,
    ItemResult,
    JobStatus,
    Role,
    Task,
    TaskStatus,
)
from skyfill.engine.state.base import JobRecord, Segment, StateStore
from skyfill.engine.state.redis import IntegrityError, RedisStateStore
from skyfill.engine.state.redis_keys import RedisKeys
from skyfill.engine.state.sqlite import SqliteStateStore
from tests.helpers import wall_clock_after

INTEGRITY = (sqlite3.IntegrityError, IntegrityError)


@pytest.fixture(params=["sqlite", "redis"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StateStore]:
    if request.param == "sqlite":
        backend: StateStore = SqliteStateStore(tmp_path / "state.db")
    else:
        url = request.getfixturevalue("redis_url")
        backend = RedisStateStore.from_url(url, f"job-{uuid.uuid4().hex[:8]}")
    yield backend
    backend.close()


def _batch(batch_id: str, items: list[str], phase: str = "backfill") -> Batch:
    return Batch(batch_id, phase, "initial_batch" if phase == "backfill" else "retry", tuple(items))


def _task(task_id: str, batch_id: str, phase: str = "backfill", role: Role = Role.WORKER) -> Task:
    return Task(task_id, batch_id, role, phase, "initial_batch" if phase == "backfill" else "retry")


def _create(store: StateStore) -> None:
    """Two batches (items given out of order), two worker tasks and a coordinator."""
    store.create_job(
        "job-1",
        "squares",
        "tests.engine.squares:Squares",
        {"n": 5, "nested": {"a": [1, 2]}},
        [_batch("batch-0001", ["c", "a", "b"]), _batch("batch-0002", ["e", "d"])],
        [
            _task("coord", "batch-0001", role=Role.COORDINATOR),
            _task("task-0002", "batch-0002"),
            _task("task-0001", "batch-0001"),
        ],
    )


def _ok(key: str, attempts: int = 1, **metrics: float) -> ItemResult:
    return ItemResult(key, "ok", attempts=attempts, data={"k": key}, metrics=dict(metrics))


def _failed(key: str, retryable: bool, attempts: int = 1) -> ItemResult:
    return ItemResult(key, "failed", "Timeout", f"{key} timed out", retryable, attempts)


# -- job --------------------------------------------------------------------------------------


def test_empty_store(store: StateStore) -> None:
    assert store.job() is None
    store.set_job_status(JobStatus.PAUSED, "x")
    store.heartbeat("host:1")
    store.request_control("cancel")
    store.start_task("nope")
    assert store.job() is None
    assert store.tasks() == []
    assert store.task_status_counts() == {}
    assert store.task_info("nope") == {}
    assert store.segments("nope") == []
    assert store.batch_items("nope") == []
    assert store.pending_items("nope") == []
    assert list(store.iter_items()) == []
    assert store.status_counts() == {}
    assert store.failed_items(retryable_only=False) == []
    assert store.completions_since(0) == 0
    assert store.task_item_metrics("nope") == {"items_processed": 0, "rows": 0}
    assert store.get_stats("handler") == {}
    assert store.samples() == []
    assert store.samples(since=0, last=5) == []


def test_create_job_then_job(store: StateStore) -> None:
    before = time.time()
    _create(store)
    after = time.time()
    job = store.job()
    assert isinstance(job, JobRecord)
    assert job.job_id == "job-1"
    assert job.job_type == "squares"
    assert job.handler == "tests.engine.squares:Squares"
    assert job.status is JobStatus.RUNNING
    assert job.phase == "backfill"
    assert job.config == {"n": 5, "nested": {"a": [1, 2]}}
    assert before <= job.created_at == job.updated_at <= after
    assert isinstance(job.item_count, int) and job.item_count == 5
    assert (job.control, job.heartbeat_at, job.runner) == (None, None, None)
    assert store.status_counts() == {"pending": 5}
    assert [i.key for i in store.iter_items()] == ["a", "b", "c", "d", "e"]
    first = next(iter(store.iter_items()))
    assert first == ItemResult("a", "pending", None, None, False, 0, {}, {})


def test_create_job_without_batches(store: StateStore) -> None:
    store.create_job("j", "t", "m:C", {}, [], [])
    job = store.job()
    assert job is not None
    assert (job.phase, job.item_count, job.config) == ("backfill", 0, {})
    assert store.status_counts() == {}


def test_create_job_twice_fails_and_keeps_the_first(store: StateStore) -> None:
    _create(store)
    with pytest.raises(INTEGRITY):
        store.create_job("job-1", "other", "m:C", {}, [_batch("batch-9", ["z"])], [])
    job = store.job()
    assert job is not None and job.job_type == "squares"
    assert store.batch_items("batch-9") == []
    assert [i.key for i in store.iter_items()] == ["a", "b", "c", "d", "e"]


def test_create_job_with_duplicate_item_fails_atomically(store: StateStore) -> None:
    with pytest.raises(INTEGRITY):
        store.create_job(
            "j", "t", "m:C", {}, [_batch("b1", ["x", "y"]), _batch("b2", ["y"])], [_task("t", "b1")]
        )
    assert store.job() is None
    assert store.tasks() == []
    assert list(store.iter_items()) == []


def test_set_job_status(store: StateStore) -> None:
    _create(store)
    job = store.job()
    assert job is not None
    wall_clock_after(job.updated_at)
    store.set_job_status(JobStatus.AGGREGATING, "aggregate")
    changed = store.job()
    assert changed is not None
    assert (changed.status, changed.phase) == (JobStatus.AGGREGATING, "aggregate")
    assert changed.updated_at > job.updated_at
    assert changed.created_at == job.created_at
    store.set_job_status(JobStatus.COMPLETED)
    done = store.job()
    assert done is not None and (done.status, done.phase) == (JobStatus.COMPLETED, "aggregate")


def test_heartbeat_and_control(store: StateStore) -> None:
    _create(store)
    before = time.time()
    store.heartbeat("host-a:12")
    job = store.job()
    assert job is not None
    assert job.runner == "host-a:12"
    assert job.heartbeat_at is not None and before <= job.heartbeat_at <= time.time()
    store.heartbeat("host-b:7")
    job = store.job()
    assert job is not None and job.runner == "host-b:7"
    store.request_control("pause")
    job = store.job()
    assert job is not None and job.control == "pause"
    store.request_control("cancel")
    job = store.job()
    assert job is not None and job.control == "cancel"
    store.request_control(None)
    job = store.job()
    assert job is not None and job.control is None
    assert job.runner == "host-b:7"


def test_stats(store: StateStore) -> None:
    store.put_stats("handler", {"requests": 3, "hosts": {"a": 1.5}})
    store.put_stats("other", {"x": [1]})
    assert store.get_stats("handler") == {"requests": 3, "hosts": {"a": 1.5}}
    store.put_stats("handler", {"requests": 4})
    assert store.get_stats("handler") == {"requests": 4}
    assert store.get_stats("other") == {"x": [1]}
    assert store.get_stats("missing") == {}


def test_samples_timeline(store: StateStore) -> None:
    before = time.time()
    store.append_sample({"items": {"ok": 1}, "hosts": {"a": {"requests": 2, "p95": 0.25}}})
    stamped = store.samples()
    assert len(stamped) == 1 and before <= stamped[0]["t"] <= time.time()
    assert stamped[0]["items"] == {"ok": 1} and stamped[0]["hosts"]["a"]["p95"] == 0.25
    base = stamped[0]["t"] + 10
    for i in (3, 1, 2):  # out of order: read back in time order
        store.append_sample({"t": base + i, "rows": i * 100})
    assert [s.get("rows") for s in store.samples()] == [None, 100, 200, 300]
    assert [s["rows"] for s in store.samples(since=base + 1)] == [200, 300]
    assert [s["rows"] for s in store.samples(last=2)] == [200, 300]
    assert [s["rows"] for s in store.samples(since=base, last=1)] == [300]
    assert store.samples(since=base + 3) == []
    assert store.samples(last=0) == []
    assert len(store.samples(since=0, last=100)) == 4


# -- tasks ------------------------------------------------------------------------------------


def test_tasks_in_creation_order_and_filters(store: StateStore) -> None:
    _create(store)
    tasks = store.tasks()
    assert [t.task_id for t in tasks] == ["coord", "task-0002", "task-0001"]
    assert tasks[0] == Task("coord", "batch-0001", Role.COORDINATOR, "backfill", "initial_batch")
    assert all(t.status is TaskStatus.PENDING and isinstance(t.role, Role) for t in tasks)
    store.start_task("task-0001")
    store.finish_task(
        "task-0002", TaskStatus.DONE, output_file=None, row_count=0, sha256=None, metrics={}
    )
    assert [t.task_id for t in store.tasks(status=TaskStatus.RUNNING)] == ["task-0001"]
    assert [t.task_id for t in store.tasks(status=TaskStatus.PENDING)] == ["coord"]
    assert [t.task_id for t in store.tasks("backfill", TaskStatus.DONE)] == ["task-0002"]
    assert store.tasks("retry_1") == []
    assert store.tasks("retry_1", TaskStatus.DONE) == []
    assert store.task_status_counts() == {"pending": 1, "running": 1, "done": 1}


def test_start_finish_and_task_info(store: StateStore) -> None:
    _create(store)
    info = store.task_info("task-0001")
    assert info == {
        "task_id": "task-0001",
        "batch_id": "batch-0001",
        "role": "worker",
        "phase": "backfill",
        "grp": "initial_batch",
        "status": "pending",
        "attempts": 0,
        "started_at": None,
        "finished_at": None,
        "output_file": None,
        "row_count": None,
        "sha256": None,
        "metrics": None,
        "error": None,
    }
    store.start_task("task-0001")
    started = store.task_info("task-0001")["started_at"]
    assert isinstance(started, float)
    wall_clock_after(started)  # a second start would stamp a later time: it must not
    store.start_task("task-0001")
    info = store.task_info("task-0001")
    assert (info["status"], info["attempts"], info["started_at"]) == ("running", 2, started)
    store.finish_task(
        "task-0001",
        TaskStatus.FAILED,
        output_file="out/part.parquet",
        row_count=12,
        sha256="abc",
        metrics={"items_processed": 3, "bytes": 1.5},
        error="boom",
    )
    info = store.task_info("task-0001")
    assert info["status"] == "failed"
    assert info["finished_at"] >= started
    assert (info["output_file"], info["row_count"], info["sha256"]) == (
        "out/part.parquet",
        12,
        "abc",
    )
    assert info["metrics"] == {"items_processed": 3, "bytes": 1.5}
    assert info["error"] == "boom"
    store.finish_task(
        "task-0001", TaskStatus.DONE, output_file=None, row_count=0, sha256=None, metrics={}
    )
    info = store.task_info("task-0001")
    assert (info["status"], info["output_file"], info["error"], info["metrics"]) == (
        "done",
        None,
        None,
        {},
    )
    assert store.task_info("task-0002")["status"] == "pending"


# -- items ------------------------------------------------------------------------------------


def test_batch_and_pending_items_sorted(store: StateStore) -> None:
    _create(store)
    assert store.batch_items("batch-0001") == ["a", "b", "c"]
    assert store.pending_items("batch-0001") == ["a", "b", "c"]
    assert store.batch_items("batch-0002") == ["d", "e"]
    store.commit_items("task-0001", [_ok("b")], [1], None)
    assert store.pending_items("batch-0001") == ["a", "c"]
    assert store.batch_items("batch-0001") == ["a", "b", "c"]
    assert store.pending_items("batch-0002") == ["d", "e"]


def test_commit_items_with_segment(store: StateStore) -> None:
    _create(store)
    before = time.time()
    store.commit_items(
        "task-0001",
        [_ok("a", api=2, bytes=10.5), _failed("c", retryable=True)],
        [3, 0],
        Segment("task-0001", 1, "seg/1.arrow", 3),
    )
    assert store.pending_items("batch-0001") == ["b"]
    assert store.segments("task-0001") == [Segment("task-0001", 1, "seg/1.arrow", 3)]
    assert store.segments("task-0002") == []
    assert store.status_counts() == {"pending": 3, "ok": 1, "failed": 1}
    items = {i.key: i for i in store.iter_items()}
    assert items["a"] == ItemResult(
        "a", "ok", None, None, False, 1, {"k": "a"}, {"api": 2, "bytes": 10.5}
    )
    assert items["c"] == ItemResult("c", "failed", "Timeout", "c timed out", True, 1, {}, {})
    assert store.task_item_metrics("task-0001") == {
        "items_processed": 2,
        "rows": 3,
        "api": 2,
        "bytes": 10.5,
    }
    assert store.completions_since(before) == 2
    assert store.completions_since(time.time() + 1) == 0


def test_segments_ordered_by_seq(store: StateStore) -> None:
    _create(store)
    for seq, key in [(10, "a"), (2, "b"), (7, "c")]:
        store.commit_items(
            "task-0001", [_ok(key)], [seq], Segment("task-0001", seq, f"s{seq}", seq)
        )
    assert [s.seq for s in store.segments("task-0001")] == [2, 7, 10]
    assert store.segments("task-0001")[0] == Segment("task-0001", 2, "s2", 2)
    assert store.task_item_metrics("task-0001")["rows"] == 19


def test_attempts_accumulate_and_outcome_overwrites(store: StateStore) -> None:
    _create(store)
    store.commit_items("task-0001", [_failed("a", retryable=True, attempts=2)], [0], None)
    store.commit_items("task-0001", [_failed("a", retryable=True, attempts=1)], [0], None)
    store.commit_items("task-0002", [_ok("a", attempts=3, api=1)], [5], None)
    item = next(i for i in store.iter_items() if i.key == "a")
    assert (item.status, item.attempts, item.error_class, item.error) == ("ok", 6, None, None)
    assert item.retryable is False
    assert store.status_counts() == {"pending": 4, "ok": 1}
    assert store.failed_items(retryable_only=False) == []
    # The item's metrics count for the task that recorded its outcome last.
    assert store.task_item_metrics("task-0001") == {"items_processed": 0, "rows": 0}
    assert store.task_item_metrics("task-0002") == {"items_processed": 1, "rows": 5, "api": 1}
    # An item committed twice in one call: both attempts count, the last outcome wins.
    store.commit_items("task-0001", [_failed("d", False), _ok("d", attempts=2)], [0, 4], None)
    item = next(i for i in store.iter_items() if i.key == "d")
    assert (item.status, item.attempts) == ("ok", 3)


def test_one_commit_over_two_batches_keeps_every_index(store: StateStore) -> None:
    """Redis updates its indexes once per commit (members gathered per index): items of
    two batches, one given twice (failed, then back to pending), end as one by one would."""
    _create(store)
    t0 = time.time()
    pending = ItemResult("b", "pending", attempts=1)
    results = [_ok("a"), _failed("b", True), _failed("d", True), _ok("e"), pending]
    store.commit_items("task-0001", results, [2, 0, 0, 3, 0], None)
    assert store.status_counts() == {"pending": 2, "ok": 2, "failed": 1}
    assert store.pending_items("batch-0001") == ["b", "c"]
    assert store.pending_items("batch-0002") == []
    assert [(i.key, t) for i, t in store.failed_items(retryable_only=True)] == [("d", "task-0001")]
    assert store.completions_since(t0) == 3  # a, d, e; b is pending again
    assert store.task_item_metrics("task-0001") == {"items_processed": 4, "rows": 5}
    b = next(i for i in store.iter_items() if i.key == "b")
    assert (b.status, b.attempts, b.error) == ("pending", 2, None)
    # d's retry succeeds under another task: it leaves the failed indexes and its old task
    store.commit_items("task-0002", [_ok("d")], [1], None)
    assert store.failed_items(retryable_only=False) == []
    assert store.task_item_metrics("task-0001") == {"items_processed": 3, "rows": 5}
    assert store.task_item_metrics("task-0002") == {"items_processed": 1, "rows": 1}


def test_commit_unknown_item_is_ignored(store: StateStore) -> None:
    _create(store)
    store.commit_items("task-0001", [_ok("zzz"), _ok("a")], [1, 1], None)
    assert [i.key for i in store.iter_items()] == ["a", "b", "c", "d", "e"]
    assert store.status_counts() == {"pending": 4, "ok": 1}
    assert store.task_item_metrics("task-0001")["items_processed"] == 1


def test_commit_rows_mismatch_raises_and_changes_nothing(store: StateStore) -> None:
    _create(store)
    with pytest.raises(ValueError):
        store.commit_items("task-0001", [_ok("a"), _ok("b")], [1], Segment("task-0001", 1, "p", 1))
    assert store.segments("task-0001") == []
    assert store.status_counts() == {"pending": 5}


def test_failed_items_filters(store: StateStore) -> None:
    _create(store)
    store.commit_items(
        "task-0001", [_failed("c", True), _failed("a", False), _ok("b")], [0] * 3, None
    )
    store.commit_items("task-0002", [_failed("e", True), _failed("d", False)], [0, 0], None)
    everything = store.failed_items(retryable_only=False)
    assert [(i.key, t) for i, t in everything] == [
        ("a", "task-0001"),
        ("c", "task-0001"),
        ("d", "task-0002"),
        ("e", "task-0002"),
    ]
    assert everything[0][0] == ItemResult("a", "failed", "Timeout", "a timed out", False, 1)
    retryable = store.failed_items(retryable_only=True)
    assert [(i.key, t) for i, t in retryable] == [("c", "task-0001"), ("e", "task-0002")]
    assert all(i.retryable for i, _ in retryable)
    # A retryable failure that becomes final leaves the retryable list.
    store.commit_items("task-0002", [_failed("e", False)], [0], None)
    assert [i.key for i, _ in store.failed_items(retryable_only=True)] == ["c"]
    assert len(store.failed_items(retryable_only=False)) == 4


def test_items_with_status_gives_only_those_by_key(store: StateStore) -> None:
    _create(store)
    store.commit_items(
        "task-0001", [_failed("c", True), _ok("a"), _failed("b", False)], [0] * 3, None
    )
    assert [i.key for i in store.items_with_status(["failed"])] == ["b", "c"]
    assert [i.key for i in store.items_with_status(["ok", "failed"])] == ["a", "b", "c"]
    assert [i.key for i in store.items_with_status(["pending"])] == ["d", "e"]
    assert list(store.items_with_status(["invalid_repo"])) == []
    assert next(iter(store.items_with_status(["failed"]))) == next(
        i for i in store.iter_items() if i.key == "b"
    )


def test_completions_since(store: StateStore) -> None:
    _create(store)
    t0 = time.time()
    store.commit_items("task-0001", [_ok("a"), _failed("b", True)], [1, 0], None)
    t1 = wall_clock_after(time.time())
    store.commit_items("task-0002", [_ok("d")], [1], None)
    assert store.completions_since(t0) == 3
    assert store.completions_since(t1) == 1
    assert store.completions_since(time.time() + 5) == 0
    # Recommitting moves the item's completion time forward (it is counted once).
    t2 = wall_clock_after(time.time())
    store.commit_items("task-0001", [_ok("b")], [1], None)
    assert store.completions_since(t0) == 3
    assert store.completions_since(t2) == 1


def test_plan_phase_moves_items_as_pending(store: StateStore) -> None:
    _create(store)
    store.commit_items(
        "task-0001", [_failed("a", True, 2), _failed("c", False), _ok("b")], [0, 0, 2], None
    )
    store.commit_items("task-0002", [_failed("e", True)], [0], None)
    t_plan = time.time()
    job = store.job()
    assert job is not None
    wall_clock_after(job.updated_at)
    store.plan_phase(
        "retry_1",
        [_batch("retry1-batch-0001", ["e", "a", "ghost"], "retry_1")],
        [_task("retry1-task-0001", "retry1-batch-0001", "retry_1")],
    )
    moved = store.job()
    assert moved is not None
    assert (moved.phase, moved.status) == ("retry_1", JobStatus.RUNNING)
    assert moved.updated_at > job.updated_at
    assert store.batch_items("retry1-batch-0001") == ["a", "e"]
    assert store.pending_items("retry1-batch-0001") == ["a", "e"]
    assert store.batch_items("batch-0001") == ["b", "c"]
    assert store.pending_items("batch-0001") == []
    assert store.batch_items("batch-0002") == ["d"]
    assert store.pending_items("batch-0002") == ["d"]
    assert store.status_counts() == {"pending": 3, "ok": 1, "failed": 1}
    assert [i.key for i, _ in store.failed_items(retryable_only=False)] == ["c"]
    assert store.failed_items(retryable_only=True) == []
    assert store.completions_since(t_plan - 60) == 2  # b and c; a and e are pending again
    item = next(i for i in store.iter_items() if i.key == "a")
    assert (item.status, item.attempts) == ("pending", 2)  # attempts are kept
    assert [t.task_id for t in store.tasks("retry_1")] == ["retry1-task-0001"]
    assert [t.task_id for t in store.tasks()][-1] == "retry1-task-0001"
    assert store.task_item_metrics("task-0001")["items_processed"] == 3
    # The retry task commits: the items now belong to it.
    store.commit_items("retry1-task-0001", [_ok("a", attempts=1, api=4)], [7], None)
    assert store.pending_items("retry1-batch-0001") == ["e"]
    assert store.task_item_metrics("retry1-task-0001") == {
        "items_processed": 1,
        "rows": 7,
        "api": 4,
    }
    assert store.task_item_metrics("task-0001")["items_processed"] == 2
    assert next(i for i in store.iter_items() if i.key == "a").attempts == 3


def test_plan_phase_with_existing_task_fails_atomically(store: StateStore) -> None:
    _create(store)
    store.commit_items("task-0001", [_failed("a", True)], [0], None)
    with pytest.raises(INTEGRITY):
        store.plan_phase(
            "retry_1",
            [_batch("retry1-batch-0001", ["a"], "retry_1")],
            [_task("retry1-task-0001", "retry1-batch-0001", "retry_1"), _task("task-0001", "x")],
        )
    job = store.job()
    assert job is not None and job.phase == "backfill"
    assert store.batch_items("retry1-batch-0001") == []
    assert store.batch_items("batch-0001") == ["a", "b", "c"]
    assert [i.key for i, _ in store.failed_items(retryable_only=True)] == ["a"]
    assert store.status_counts() == {"pending": 4, "failed": 1}
    assert [t.task_id for t in store.tasks()] == ["coord", "task-0002", "task-0001"]


def test_duplicate_segment_fails_and_changes_nothing(store: StateStore) -> None:
    _create(store)
    store.commit_items("task-0001", [_ok("a")], [2], Segment("task-0001", 1, "seg/1", 2))
    t = time.time()
    with pytest.raises(INTEGRITY):
        store.commit_items(
            "task-0001",
            [_ok("b", api=1), _failed("c", True)],
            [5, 0],
            Segment("task-0001", 1, "seg/other", 5),
        )
    assert store.segments("task-0001") == [Segment("task-0001", 1, "seg/1", 2)]
    assert store.pending_items("batch-0001") == ["b", "c"]
    assert store.status_counts() == {"pending": 4, "ok": 1}
    assert store.failed_items(retryable_only=False) == []
    assert store.completions_since(t) == 0
    assert store.task_item_metrics("task-0001") == {"items_processed": 1, "rows": 2}
    items = {i.key: i for i in store.iter_items()}
    assert (items["b"].status, items["b"].attempts) == ("pending", 0)
    # The same seq of another task is a different segment.
    store.commit_items("task-0002", [_ok("d")], [1], Segment("task-0002", 1, "seg/d", 1))
    assert store.segments("task-0002") == [Segment("task-0002", 1, "seg/d", 1)]


def test_add_items_to_a_running_job(store: StateStore) -> None:
    _create(store)
    assert store.known_items(["a", "x", "e", "y"]) == {"a", "e"}
    added = store.add_items([_batch("batch-0003", ["y", "x"])], [_task("task-0003", "batch-0003")])
    assert added == 2
    job = store.job()
    assert job is not None and job.item_count == 7 and job.phase == "backfill"
    assert store.pending_items("batch-0003") == ["x", "y"]
    assert store.status_counts() == {"pending": 7}
    assert [t.task_id for t in store.tasks()][-1] == "task-0003"
    assert store.known_items(["x", "y", "z"]) == {"x", "y"}


def test_add_items_that_exist_fails_atomically(store: StateStore) -> None:
    _create(store)
    with pytest.raises(INTEGRITY):
        store.add_items([_batch("batch-0003", ["z", "a"])], [_task("task-0003", "batch-0003")])
    job = store.job()
    assert job is not None and job.item_count == 5
    assert store.batch_items("batch-0003") == [] and store.known_items(["z"]) == set()
    assert "task-0003" not in [t.task_id for t in store.tasks()]


def test_replayed_commit_is_a_no_op(store: StateStore) -> None:
    """A commit repeated after its reply was lost (Redis restart) changes nothing."""
    _create(store)
    segment = Segment("task-0001", 1, "seg/1", 2)
    store.commit_items("task-0001", [_ok("a")], [2], segment)
    store.commit_items("task-0001", [_ok("a")], [2], segment)
    assert store.segments("task-0001") == [segment]
    assert next(i for i in store.iter_items() if i.key == "a").attempts == 1
    assert store.status_counts() == {"pending": 4, "ok": 1}


def test_iter_items_many_sorted(store: StateStore) -> None:
    keys = [f"did:plc:{i:05d}" for i in range(2500)]
    store.create_job(
        "j", "t", "m:C", {}, [_batch("b1", keys[::-1][:1200]), _batch("b2", keys[::-1][1200:])], []
    )
    assert [i.key for i in store.iter_items()] == keys
    assert store.pending_items("b2") == keys[:1300]


# -- Redis only -------------------------------------------------------------------------------


def test_redis_keys_share_one_hash_tag(redis_url: str) -> None:
    store = RedisStateStore.from_url(redis_url, "tagged")
    try:
        _create(store)
        store.commit_items("task-0001", [_ok("a")], [1], Segment("task-0001", 1, "p", 1))
        client = redis.Redis.from_url(redis_url, decode_responses=True)
        found = list(client.scan_iter(match="*{tagged}*"))
        assert found and all(k.startswith("skyfill:{tagged}:") for k in found)
        assert RedisKeys("tagged").job in found
        assert len({key_slot(k.encode()) for k in found}) == 1
        client.close()
    finally:
        store.close()


def test_redis_jobs_are_isolated(redis_url: str) -> None:
    one = RedisStateStore.from_url(redis_url, "iso-1")
    two = RedisStateStore.from_url(redis_url, "iso-2")
    try:
        _create(one)
        assert two.job() is None
        assert two.status_counts() == {}
        _create(two)
        one.commit_items("task-0001", [_ok("a")], [1], None)
        assert two.status_counts() == {"pending": 5}
    finally:
        one.close()
        two.close()


def test_redis_accepts_a_bytes_client(redis_url: str) -> None:
    store = RedisStateStore(redis.Redis.from_url(redis_url), "bytes-client")
    _create(store)
    store.commit_items("task-0001", [_failed("a", True)], [0], Segment("task-0001", 3, "p", 0))
    job = store.job()
    assert job is not None and job.job_type == "squares"
    assert store.pending_items("batch-0001") == ["b", "c"]
    assert store.failed_items(retryable_only=True)[0][1] == "task-0001"
    assert store.segments("task-0001") == [Segment("task-0001", 3, "p", 0)]
    assert store.tasks()[0].task_id == "coord"
    assert store.get_stats("x") == {}


def test_the_redis_stores_repr_hides_the_password() -> None:
    store = RedisStateStore.from_url("redis://user:s3cret@127.0.0.1:1/0", "j")
    assert "s3cret" not in repr(store)
    store.close()


def test_redis_concurrent_commits_stay_consistent(redis_url: str) -> None:
    """Workers on many connections commit items of one batch at once (WATCH retries)."""
    keys = [f"k{i:03d}" for i in range(200)]
    setup = RedisStateStore.from_url(redis_url, "concurrent")
    setup.create_job("j", "t", "m:C", {}, [_batch("b", keys)], [_task("t", "b")])
    errors: list[BaseException] = []

    def work(part: list[str]) -> None:
        store = RedisStateStore.from_url(redis_url, "concurrent")
        try:
            for key in part:
                # every worker also touches a shared item, forcing EXEC aborts and retries
                store.commit_items("t", [_ok(key, api=1), _ok("k000")], [1, 0], None)
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=work, args=(keys[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert setup.pending_items("b") == []
    assert setup.status_counts() == {"ok": 200}
    assert next(iter(setup.iter_items())).attempts == 201
    assert setup.task_item_metrics("t")["items_processed"] == 200
    setup.close()


# -- status transitions (engine/model.py's table, enforced by every store) --------------------


def test_a_job_moves_only_as_the_transition_table_allows(store: StateStore) -> None:
    _create(store)
    store.set_job_status(JobStatus.AGGREGATING, "aggregate")
    store.set_job_status(JobStatus.COMPLETED)
    store.set_job_status(JobStatus.COMPLETED)  # staying put is allowed: a replayed write
    for impossible in (JobStatus.AGGREGATING, JobStatus.PAUSED, JobStatus.FAILED):
        with pytest.raises(InvalidTransition):
            store.set_job_status(impossible)
    job = store.job()
    assert job is not None and job.status is JobStatus.COMPLETED
    store.set_job_status(JobStatus.RUNNING)  # `skyfill retry --failed` reopens it
    job = store.job()
    assert job is not None and job.status is JobStatus.RUNNING


def test_a_new_phase_takes_only_failed_items(store: StateStore) -> None:
    _create(store)
    store.commit_items("task-0001", [_ok("a"), _failed("b", True)], [1, 0], None)
    with pytest.raises(InvalidTransition):
        store.plan_phase(
            "retry_1",
            [_batch("retry1-batch-0001", ["a", "b"], "retry_1")],
            [_task("retry1-task-0001", "retry1-batch-0001", "retry_1")],
        )
    assert store.tasks("retry_1") == []
    assert store.status_counts() == {"ok": 1, "failed": 1, "pending": 3}
    job = store.job()
    assert job is not None and job.phase == "backfill"

"""The embedded state store: one SQLite file per job, WAL mode, safe against kill -9.

Safe to use from several threads at once (the engine commits from worker threads, off the
event loop): writes go through one connection, one at a time; each thread reads through a
connection of its own, which in WAL mode never waits for a writer.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import orjson

from skyfill.engine.model import (
    Batch,
    ItemResult,
    ItemStatus,
    JobStatus,
    Role,
    Task,
    TaskStatus,
    check_job_transition,
)
from skyfill.engine.state.base import CLAIM, JobRecord, Segment, TaskTakenOver
from skyfill.engine.state.sqlite_db import (
    ITEM_COLUMNS,
    SCHEMA,
    TASK_COLUMNS,
    Transaction,
    check_moves_to_pending,
    connect,
    item_from_row,
)
from skyfill.failpoints import failpoint


class SqliteStateStore:
    """StateStore on one SQLite database file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._db = connect(path)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._write_lock = threading.RLock()
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []

    def close(self) -> None:
        with self._write_lock:
            for reader in self._readers:
                reader.close()
            self._readers.clear()
            self._db.close()

    def _transaction(self) -> Transaction:
        return Transaction(self._db, self._write_lock)

    def _write(self, sql: str, params: tuple = ()) -> None:
        """One statement, atomic on its own (autocommit)."""
        with self._write_lock:
            self._db.execute(sql, params)

    def _reader(self) -> sqlite3.Connection:
        """This thread's read connection."""
        reader = getattr(self._local, "db", None)
        if reader is None:
            reader = self._local.db = connect(self._path)
            with self._write_lock:
                self._readers.append(reader)
        return reader

    # -- job ------------------------------------------------------------------------------

    def create_job(
        self,
        job_id: str,
        job_type: str,
        handler: str,
        config: dict[str, Any],
        batches: list[Batch],
        tasks: list[Task],
    ) -> None:
        now = time.time()
        items = sum(len(b.items) for b in batches)
        phase = batches[0].phase if batches else "backfill"
        with self._transaction() as db:
            db.execute(
                "INSERT INTO job (job_id, job_type, handler, status, phase, config, created_at, "
                "updated_at, item_count) VALUES (?,?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    job_type,
                    handler,
                    JobStatus.RUNNING,
                    phase,
                    orjson.dumps(config).decode(),
                    now,
                    now,
                    items,
                ),
            )
            self._insert_plan(db, batches, tasks)

    def job(self) -> JobRecord | None:
        row = (
            self._reader()
            .execute(
                "SELECT job_id, job_type, handler, status, phase, config, created_at, updated_at, "
                "item_count, control, heartbeat_at, runner FROM job"
            )
            .fetchone()
        )
        if row is None:
            return None
        job_id, job_type, handler, status, phase, config, *rest = row
        return JobRecord(
            job_id, job_type, handler, JobStatus(status), phase, orjson.loads(config), *rest
        )

    def set_job_status(self, status: JobStatus, phase: str | None = None) -> None:
        with self._transaction() as db:
            self._check_transition(db, status)
            db.execute(
                "UPDATE job SET status = ?, phase = COALESCE(?, phase), updated_at = ?",
                (status, phase, time.time()),
            )

    @staticmethod
    def _check_transition(db: sqlite3.Connection, status: JobStatus) -> None:
        row = db.execute("SELECT status FROM job").fetchone()
        if row is not None:
            check_job_transition(JobStatus(row[0]), status)

    def heartbeat(self, runner: str) -> None:
        self._write("UPDATE job SET heartbeat_at = ?, runner = ?", (time.time(), runner))

    def request_control(self, action: str | None) -> None:
        self._write("UPDATE job SET control = ?, updated_at = ?", (action, time.time()))

    def plan_phase(self, phase: str, batches: list[Batch], tasks: list[Task]) -> None:
        with self._transaction() as db:
            self._check_transition(db, JobStatus.RUNNING)
            check_moves_to_pending(db, [key for b in batches for key in b.items])
            self._insert_plan(db, batches, tasks, move_items=True)
            db.execute(
                "UPDATE job SET phase = ?, status = ?, updated_at = ?",
                (phase, JobStatus.RUNNING, time.time()),
            )

    @staticmethod
    def _insert_plan(
        db: sqlite3.Connection, batches: list[Batch], tasks: list[Task], move_items: bool = False
    ) -> None:
        db.executemany(
            "INSERT INTO batches VALUES (?,?,?,?)",
            [(b.batch_id, b.phase, b.group, len(b.items)) for b in batches],
        )
        db.executemany(
            f"INSERT INTO tasks ({TASK_COLUMNS}) VALUES (?,?,?,?,?,?)",
            [(t.task_id, t.batch_id, t.role, t.phase, t.group, t.status) for t in tasks],
        )
        pending = [(b.batch_id, ItemStatus.PENDING, key) for b in batches for key in b.items]
        if move_items:
            db.executemany("UPDATE items SET batch_id = ?, status = ? WHERE key = ?", pending)
        else:
            db.executemany("INSERT INTO items (batch_id, status, key) VALUES (?,?,?)", pending)

    def add_items(self, batches: list[Batch], tasks: list[Task]) -> int:
        items = sum(len(b.items) for b in batches)
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM job").fetchone() is None:
                raise sqlite3.IntegrityError("no job to add items to")
            self._insert_plan(db, batches, tasks)
            db.execute("UPDATE job SET item_count = item_count + ?", (items,))
        return items

    def known_items(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._reader().execute(f"SELECT key FROM items WHERE key IN ({marks})", chunk)
            found.update(key for (key,) in rows)
        return found

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        self._write(
            "INSERT INTO stats VALUES (?,?,?) ON CONFLICT (name) DO UPDATE SET "
            "data = excluded.data, updated_at = excluded.updated_at",
            (name, orjson.dumps(data).decode(), time.time()),
        )

    def get_stats(self, name: str) -> dict[str, Any]:
        row = self._reader().execute("SELECT data FROM stats WHERE name = ?", (name,)).fetchone()
        return orjson.loads(row[0]) if row else {}

    def append_sample(self, sample: dict[str, Any]) -> None:
        sample = {"t": time.time(), **sample}
        self._write(
            "INSERT INTO samples VALUES (?,?)", (sample["t"], orjson.dumps(sample).decode())
        )

    def samples(self, since: float | None = None, last: int | None = None) -> list[dict[str, Any]]:
        rows = self._reader().execute(
            "SELECT data FROM (SELECT rowid, t, data FROM samples WHERE (?1 IS NULL OR t > ?1) "
            "ORDER BY t DESC, rowid DESC LIMIT ?2) ORDER BY t, rowid",
            (since, -1 if last is None else last),
        )
        return [orjson.loads(data) for (data,) in rows]

    # -- tasks ----------------------------------------------------------------------------

    def tasks(self, phase: str | None = None, status: TaskStatus | None = None) -> list[Task]:
        rows = self._reader().execute(
            f"SELECT {TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR phase = ?1) "
            "AND (?2 IS NULL OR status = ?2) ORDER BY rowid",
            (phase, status),
        )
        return [Task(t, b, Role(r), p, g, TaskStatus(s)) for t, b, r, p, g, s in rows]

    def task(self, task_id: str) -> Task | None:
        row = (
            self._reader()
            .execute(f"SELECT {TASK_COLUMNS} FROM tasks WHERE task_id = ?", (task_id,))
            .fetchone()
        )
        if row is None:
            return None
        t, b, r, p, g, s = row
        return Task(t, b, Role(r), p, g, TaskStatus(s))

    def claim_task(self, task_id: str, claim: str) -> None:
        self._write(
            "INSERT INTO claims SELECT task_id, ? FROM tasks WHERE task_id = ? "
            "ON CONFLICT (task_id) DO UPDATE SET owner = excluded.owner",
            (claim, task_id),
        )

    @staticmethod
    def _check_owner(db: sqlite3.Connection, task_id: str) -> None:
        mine = CLAIM.get()
        if mine is None:
            return
        row = db.execute("SELECT owner FROM claims WHERE task_id = ?", (task_id,)).fetchone()
        if row is not None and row[0] != mine:
            raise TaskTakenOver(f"{task_id} is now worked on by {row[0]}")

    def task_status_counts(self) -> dict[str, int]:
        return dict(self._reader().execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"))

    def start_task(self, task_id: str) -> None:
        self._write(
            "UPDATE tasks SET status = ?, attempts = attempts + 1, "
            "started_at = COALESCE(started_at, ?) WHERE task_id = ?",
            (TaskStatus.RUNNING, time.time(), task_id),
        )

    def finish_task(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        output_file: str | None,
        row_count: int,
        sha256: str | None,
        metrics: dict[str, Any],
        error: str | None = None,
    ) -> None:
        with self._transaction() as db:
            self._check_owner(db, task_id)
            db.execute(
                "UPDATE tasks SET status = ?, finished_at = ?, output_file = ?, row_count = ?, "
                "sha256 = ?, metrics = ?, error = ? WHERE task_id = ?",
                (
                    status,
                    time.time(),
                    output_file,
                    row_count,
                    sha256,
                    orjson.dumps(metrics).decode(),
                    error,
                    task_id,
                ),
            )

    def task_info(self, task_id: str) -> dict[str, Any]:
        cursor = self._reader().execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
        info = dict(zip(names, row, strict=True)) if row else {}
        if info.get("metrics"):
            info["metrics"] = orjson.loads(info["metrics"])
        return info

    def segments(self, task_id: str) -> list[Segment]:
        rows = self._reader().execute(
            "SELECT task_id, seq, path, rows FROM segments WHERE task_id = ? ORDER BY seq",
            (task_id,),
        )
        return [Segment(*row) for row in rows]

    # -- items ----------------------------------------------------------------------------

    def batch_items(self, batch_id: str) -> list[str]:
        rows = self._reader().execute(
            "SELECT key FROM items WHERE batch_id = ? ORDER BY key", (batch_id,)
        )
        return [key for (key,) in rows]

    def pending_items(self, batch_id: str) -> list[str]:
        rows = self._reader().execute(
            "SELECT key FROM items WHERE batch_id = ? AND status = ? ORDER BY key",
            (batch_id, ItemStatus.PENDING),
        )
        return [key for (key,) in rows]

    def commit_items(
        self, task_id: str, results: list[ItemResult], rows: list[int], segment: Segment | None
    ) -> None:
        now = time.time()
        with self._transaction() as db:
            failpoint("state_commit")  # tests: a slow disk (`state_commit:every:sleep=0.2`)
            self._check_owner(db, task_id)
            if segment is not None:
                known = db.execute(
                    "SELECT path, rows FROM segments WHERE task_id = ? AND seq = ?",
                    (segment.task_id, segment.seq),
                ).fetchone()
                if known == (segment.path, segment.rows):
                    return  # this very commit happened already (a replay)
                db.execute(
                    "INSERT INTO segments VALUES (?,?,?,?)",
                    (segment.task_id, segment.seq, segment.path, segment.rows),
                )
            db.executemany(
                "UPDATE items SET status = ?, error_class = ?, error = ?, retryable = ?, "
                "attempts = attempts + ?, data = ?, metrics = ?, rows = ?, task_id = ?, "
                "updated_at = ? WHERE key = ?",
                [
                    (
                        r.status,
                        r.error_class,
                        r.error,
                        int(r.retryable),
                        r.attempts,
                        orjson.dumps(r.data).decode(),
                        orjson.dumps(r.metrics).decode(),
                        n,
                        task_id,
                        now,
                        r.key,
                    )
                    for r, n in zip(results, rows, strict=True)
                ],
            )

    def task_item_metrics(self, task_id: str) -> dict[str, float]:
        totals: dict[str, float] = {"items_processed": 0, "rows": 0}
        rows = self._reader().execute(
            "SELECT metrics, rows FROM items WHERE task_id = ?", (task_id,)
        )
        for metrics, count in rows:
            totals["items_processed"] += 1
            totals["rows"] += count or 0
            for name, value in orjson.loads(metrics or "{}").items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def failed_items(self, retryable_only: bool) -> list[tuple[ItemResult, str | None]]:
        rows = self._reader().execute(
            f"SELECT {ITEM_COLUMNS}, task_id FROM items WHERE status = 'failed' "
            "AND (? = 0 OR retryable = 1) ORDER BY key",
            (int(retryable_only),),
        )
        return [(item_from_row(row[:-1]), row[-1]) for row in rows]

    def items_with_status(self, statuses: Collection[str]) -> Iterator[ItemResult]:
        wanted = sorted(set(statuses))
        marks = ", ".join("?" * len(wanted))
        query = f"SELECT {ITEM_COLUMNS} FROM items WHERE status IN ({marks}) ORDER BY key"
        for row in self._reader().execute(query, wanted):
            yield item_from_row(row)

    def iter_items(self) -> Iterator[ItemResult]:
        for row in self._reader().execute(f"SELECT {ITEM_COLUMNS} FROM items ORDER BY key"):
            yield item_from_row(row)

    def status_counts(self) -> dict[str, int]:
        rows = self._reader().execute("SELECT status, COUNT(*) FROM items GROUP BY status")
        return dict(rows.fetchall())

    def completions_since(self, since: float) -> int:
        row = (
            self._reader()
            .execute(
                "SELECT COUNT(*) FROM items WHERE status != ? AND updated_at >= ?",
                (ItemStatus.PENDING, since),
            )
            .fetchone()
        )
        return int(row[0])

"""The embedded state store: one SQLite file per job, WAL mode, safe against kill -9."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from skyfill.engine.model import (
    PENDING_ITEM,
    Batch,
    ItemResult,
    JobStatus,
    Role,
    Task,
    TaskStatus,
)
from skyfill.engine.state.base import JobRecord, Segment

_SCHEMA = """
CREATE TABLE IF NOT EXISTS job (
    job_id TEXT PRIMARY KEY, job_type TEXT NOT NULL, status TEXT NOT NULL, phase TEXT NOT NULL,
    config TEXT NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL,
    item_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY, phase TEXT NOT NULL, grp TEXT NOT NULL, item_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tasks (
    task_id TEXT PRIMARY KEY, batch_id TEXT NOT NULL, role TEXT NOT NULL, phase TEXT NOT NULL,
    grp TEXT NOT NULL, status TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    started_at REAL, finished_at REAL, output_file TEXT, row_count INTEGER, sha256 TEXT,
    metrics TEXT, error TEXT
);
CREATE TABLE IF NOT EXISTS items (
    key TEXT PRIMARY KEY, batch_id TEXT NOT NULL, status TEXT NOT NULL, error_class TEXT,
    error TEXT, retryable INTEGER NOT NULL DEFAULT 0, attempts INTEGER NOT NULL DEFAULT 0,
    data TEXT, metrics TEXT, rows INTEGER, task_id TEXT, updated_at REAL
);
CREATE INDEX IF NOT EXISTS items_by_batch ON items (batch_id, status);
CREATE TABLE IF NOT EXISTS segments (
    task_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL, rows INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
);
"""


class SqliteStateStore:
    """StateStore on one SQLite database file."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def create_job(
        self,
        job_id: str,
        job_type: str,
        config: dict[str, Any],
        batches: list[Batch],
        tasks: list[Task],
    ) -> None:
        now = time.time()
        items = sum(len(b.items) for b in batches)
        with self._transaction() as db:
            db.execute(
                "INSERT INTO job VALUES (?,?,?,?,?,?,?,?)",
                (
                    job_id,
                    job_type,
                    JobStatus.RUNNING,
                    batches[0].phase if batches else "backfill",
                    orjson.dumps(config).decode(),
                    now,
                    now,
                    items,
                ),
            )
            db.executemany(
                "INSERT INTO batches VALUES (?,?,?,?)",
                [(b.batch_id, b.phase, b.group, len(b.items)) for b in batches],
            )
            db.executemany(
                "INSERT INTO tasks (task_id, batch_id, role, phase, grp, status) "
                "VALUES (?,?,?,?,?,?)",
                [(t.task_id, t.batch_id, t.role, t.phase, t.group, t.status) for t in tasks],
            )
            db.executemany(
                "INSERT INTO items (key, batch_id, status) VALUES (?,?,?)",
                [(key, b.batch_id, PENDING_ITEM) for b in batches for key in b.items],
            )

    def job(self) -> JobRecord | None:
        row = self._db.execute("SELECT * FROM job").fetchone()
        if row is None:
            return None
        job_id, job_type, status, phase, config, created, updated, count = row
        return JobRecord(
            job_id,
            job_type,
            JobStatus(status),
            phase,
            orjson.loads(config),
            created,
            updated,
            count,
        )

    def set_job_status(self, status: JobStatus, phase: str | None = None) -> None:
        self._db.execute(
            "UPDATE job SET status = ?, phase = COALESCE(?, phase), updated_at = ?",
            (status, phase, time.time()),
        )

    def tasks(self, status: TaskStatus | None = None) -> list[Task]:
        sql = "SELECT task_id, batch_id, role, phase, grp, status FROM tasks"
        rows = (
            self._db.execute(sql + " WHERE status = ? ORDER BY task_id", (status,))
            if status
            else self._db.execute(sql + " ORDER BY task_id")
        )
        return [Task(t, b, Role(r), p, g, TaskStatus(s)) for t, b, r, p, g, s in rows]

    def batch_items(self, batch_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT key FROM items WHERE batch_id = ? ORDER BY key", (batch_id,)
        )
        return [key for (key,) in rows]

    def pending_items(self, batch_id: str) -> list[str]:
        rows = self._db.execute(
            "SELECT key FROM items WHERE batch_id = ? AND status = ? ORDER BY key",
            (batch_id, PENDING_ITEM),
        )
        return [key for (key,) in rows]

    def start_task(self, task_id: str) -> None:
        self._db.execute(
            "UPDATE tasks SET status = ?, attempts = attempts + 1, "
            "started_at = COALESCE(started_at, ?) WHERE task_id = ?",
            (TaskStatus.RUNNING, time.time(), task_id),
        )

    def commit_items(
        self, task_id: str, results: list[ItemResult], rows: list[int], segment: Segment | None
    ) -> None:
        now = time.time()
        with self._transaction() as db:
            if segment is not None:
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
        """Sums of the task's items' metrics, plus items processed and rows written."""
        totals: dict[str, float] = {"dids_processed": 0, "records": 0}
        rows = self._db.execute("SELECT metrics, rows FROM items WHERE task_id = ?", (task_id,))
        for metrics, count in rows:
            totals["dids_processed"] += 1
            totals["records"] += count or 0
            for name, value in orjson.loads(metrics or "{}").items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def segments(self, task_id: str) -> list[Segment]:
        rows = self._db.execute(
            "SELECT task_id, seq, path, rows FROM segments WHERE task_id = ? ORDER BY seq",
            (task_id,),
        )
        return [Segment(*row) for row in rows]

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
        self._db.execute(
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
        cursor = self._db.execute("SELECT * FROM tasks WHERE task_id = ?", (task_id,))
        names = [d[0] for d in cursor.description]
        row = cursor.fetchone()
        info = dict(zip(names, row, strict=True)) if row else {}
        if info.get("metrics"):
            info["metrics"] = orjson.loads(info["metrics"])
        return info

    def iter_items(self) -> Iterator[ItemResult]:
        rows = self._db.execute(
            "SELECT key, status, error_class, error, retryable, attempts, data "
            "FROM items ORDER BY key"
        )
        for key, status, error_class, error, retryable, attempts, data in rows:
            yield ItemResult(
                key,
                status,
                error_class,
                error,
                bool(retryable),
                attempts,
                orjson.loads(data) if data else {},
            )

    def status_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM items GROUP BY status")
        return dict(rows.fetchall())


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")

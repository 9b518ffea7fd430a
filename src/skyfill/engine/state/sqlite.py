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
    job_id TEXT PRIMARY KEY, job_type TEXT NOT NULL, handler TEXT NOT NULL,
    status TEXT NOT NULL, phase TEXT NOT NULL, config TEXT NOT NULL,
    created_at REAL NOT NULL, updated_at REAL NOT NULL, item_count INTEGER NOT NULL,
    control TEXT, heartbeat_at REAL, runner TEXT
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
CREATE INDEX IF NOT EXISTS items_by_status ON items (status, updated_at);
CREATE INDEX IF NOT EXISTS items_by_task ON items (task_id);
CREATE TABLE IF NOT EXISTS stats (
    name TEXT PRIMARY KEY, data TEXT NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (t REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (t);
CREATE TABLE IF NOT EXISTS segments (
    task_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL, rows INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
);
"""
_TASK_COLUMNS = "task_id, batch_id, role, phase, grp, status"


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
        row = self._db.execute(
            "SELECT job_id, job_type, handler, status, phase, config, created_at, updated_at, "
            "item_count, control, heartbeat_at, runner FROM job"
        ).fetchone()
        if row is None:
            return None
        job_id, job_type, handler, status, phase, config, *rest = row
        return JobRecord(
            job_id, job_type, handler, JobStatus(status), phase, orjson.loads(config), *rest
        )

    def set_job_status(self, status: JobStatus, phase: str | None = None) -> None:
        self._db.execute(
            "UPDATE job SET status = ?, phase = COALESCE(?, phase), updated_at = ?",
            (status, phase, time.time()),
        )

    def heartbeat(self, runner: str) -> None:
        self._db.execute("UPDATE job SET heartbeat_at = ?, runner = ?", (time.time(), runner))

    def request_control(self, action: str | None) -> None:
        self._db.execute("UPDATE job SET control = ?, updated_at = ?", (action, time.time()))

    def plan_phase(self, phase: str, batches: list[Batch], tasks: list[Task]) -> None:
        with self._transaction() as db:
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
            f"INSERT INTO tasks ({_TASK_COLUMNS}) VALUES (?,?,?,?,?,?)",
            [(t.task_id, t.batch_id, t.role, t.phase, t.group, t.status) for t in tasks],
        )
        pending = [(b.batch_id, PENDING_ITEM, key) for b in batches for key in b.items]
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
            rows = self._db.execute(f"SELECT key FROM items WHERE key IN ({marks})", chunk)
            found.update(key for (key,) in rows)
        return found

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        self._db.execute(
            "INSERT INTO stats VALUES (?,?,?) ON CONFLICT (name) DO UPDATE SET "
            "data = excluded.data, updated_at = excluded.updated_at",
            (name, orjson.dumps(data).decode(), time.time()),
        )

    def get_stats(self, name: str) -> dict[str, Any]:
        row = self._db.execute("SELECT data FROM stats WHERE name = ?", (name,)).fetchone()
        return orjson.loads(row[0]) if row else {}

    def append_sample(self, sample: dict[str, Any]) -> None:
        sample = {"t": time.time(), **sample}
        self._db.execute(
            "INSERT INTO samples VALUES (?,?)", (sample["t"], orjson.dumps(sample).decode())
        )

    def samples(self, since: float | None = None, last: int | None = None) -> list[dict[str, Any]]:
        rows = self._db.execute(
            "SELECT data FROM (SELECT rowid, t, data FROM samples WHERE (?1 IS NULL OR t > ?1) "
            "ORDER BY t DESC, rowid DESC LIMIT ?2) ORDER BY t, rowid",
            (since, -1 if last is None else last),
        )
        return [orjson.loads(data) for (data,) in rows]

    # -- tasks ----------------------------------------------------------------------------

    def tasks(self, phase: str | None = None, status: TaskStatus | None = None) -> list[Task]:
        rows = self._db.execute(
            f"SELECT {_TASK_COLUMNS} FROM tasks WHERE (?1 IS NULL OR phase = ?1) "
            "AND (?2 IS NULL OR status = ?2) ORDER BY rowid",
            (phase, status),
        )
        return [Task(t, b, Role(r), p, g, TaskStatus(s)) for t, b, r, p, g, s in rows]

    def task_status_counts(self) -> dict[str, int]:
        return dict(self._db.execute("SELECT status, COUNT(*) FROM tasks GROUP BY status"))

    def start_task(self, task_id: str) -> None:
        self._db.execute(
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

    def segments(self, task_id: str) -> list[Segment]:
        rows = self._db.execute(
            "SELECT task_id, seq, path, rows FROM segments WHERE task_id = ? ORDER BY seq",
            (task_id,),
        )
        return [Segment(*row) for row in rows]

    # -- items ----------------------------------------------------------------------------

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

    def commit_items(
        self, task_id: str, results: list[ItemResult], rows: list[int], segment: Segment | None
    ) -> None:
        now = time.time()
        with self._transaction() as db:
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
        rows = self._db.execute("SELECT metrics, rows FROM items WHERE task_id = ?", (task_id,))
        for metrics, count in rows:
            totals["items_processed"] += 1
            totals["rows"] += count or 0
            for name, value in orjson.loads(metrics or "{}").items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def failed_items(self, retryable_only: bool) -> list[tuple[ItemResult, str | None]]:
        rows = self._db.execute(
            f"SELECT {_ITEM_COLUMNS}, task_id FROM items WHERE status = 'failed' "
            "AND (? = 0 OR retryable = 1) ORDER BY key",
            (int(retryable_only),),
        )
        return [(_item(row[:-1]), row[-1]) for row in rows]

    def iter_items(self) -> Iterator[ItemResult]:
        for row in self._db.execute(f"SELECT {_ITEM_COLUMNS} FROM items ORDER BY key"):
            yield _item(row)

    def status_counts(self) -> dict[str, int]:
        rows = self._db.execute("SELECT status, COUNT(*) FROM items GROUP BY status")
        return dict(rows.fetchall())

    def completions_since(self, since: float) -> int:
        row = self._db.execute(
            "SELECT COUNT(*) FROM items WHERE status != ? AND updated_at >= ?",
            (PENDING_ITEM, since),
        ).fetchone()
        return int(row[0])


_ITEM_COLUMNS = "key, status, error_class, error, retryable, attempts, data, metrics"


def _item(row: tuple) -> ItemResult:
    key, status, error_class, error, retryable, attempts, data, metrics = row
    return ItemResult(
        key,
        status,
        error_class,
        error,
        bool(retryable),
        attempts,
        orjson.loads(data) if data else {},
        orjson.loads(metrics) if metrics else {},
    )


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> sqlite3.Connection:
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        self._db.execute("ROLLBACK" if exc_type else "COMMIT")

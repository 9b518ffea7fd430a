"""The SQLite file behind the embedded state store: its schema, connections, the write
transaction, and rows decoded into engine records."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import orjson

from skyfill.engine.model import InvalidTransition, ItemResult, ItemStatus, item_may_become

SCHEMA = """
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
CREATE TABLE IF NOT EXISTS claims (task_id TEXT PRIMARY KEY, owner TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS samples (t REAL NOT NULL, data TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS samples_by_time ON samples (t);
CREATE TABLE IF NOT EXISTS segments (
    task_id TEXT NOT NULL, seq INTEGER NOT NULL, path TEXT NOT NULL, rows INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
);
"""
TASK_COLUMNS = "task_id, batch_id, role, phase, grp, status"


ITEM_COLUMNS = "key, status, error_class, error, retryable, attempts, data, metrics"


def item_from_row(row: tuple) -> ItemResult:
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


def check_moves_to_pending(db: sqlite3.Connection, keys: list[str]) -> None:
    """A new phase takes only items whose outcome may be retried (failed ones)."""
    for start in range(0, len(keys), 500):
        chunk = keys[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for (status,) in db.execute(
            f"SELECT DISTINCT status FROM items WHERE key IN ({marks})", chunk
        ):
            if not item_may_become(status, ItemStatus.PENDING):
                raise InvalidTransition(f"an item that is {status} cannot be planned again")


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    db.execute("PRAGMA synchronous=FULL")
    db.execute("PRAGMA busy_timeout=10000")
    return db


class Transaction:
    """BEGIN IMMEDIATE ... COMMIT on the write connection, holding the write lock."""

    def __init__(self, db: sqlite3.Connection, lock: threading.RLock) -> None:
        self._db = db
        self._lock = lock

    def __enter__(self) -> sqlite3.Connection:
        self._lock.acquire()
        try:
            self._db.execute("BEGIN IMMEDIATE")
        except BaseException:
            self._lock.release()
            raise
        return self._db

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self._db.execute("ROLLBACK" if exc_type else "COMMIT")
        finally:
            self._lock.release()

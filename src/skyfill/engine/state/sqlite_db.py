"""The SQLite store's file: its schema, its connections, and the locked write transaction.

Writes go through one connection, one at a time (`Transaction` holds the store's write
lock around BEGIN IMMEDIATE ... COMMIT); each thread reads through a connection of its
own, which in WAL mode never waits for a writer.
"""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

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

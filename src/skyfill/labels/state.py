"""A label stream's own state: each labeler's cursor and DID, and the last run's counters.

One SQLite file per stream (`<workdir>/streams/<stream_id>/labels.sqlite`, WAL), written
after the sink has written a batch. The sink holds the same cursor in the transaction of
the rows it covers, and is where a run resumes from; this file is what `skyfill status`
reads, and it remembers the DID each labeler's labels are signed by (learnt from its
first label, whose DID document must name the labeler's URL).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

import orjson

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (
    labeler TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS labelers (labeler TEXT PRIMARY KEY, did TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


class LabelStateStore(Protocol):
    """Where a label stream keeps its cursors, its labelers' DIDs and its counters:
    `LabelState` (a SQLite file), or a Redis hash for `skyfill index`
    (`firehose/redis_state.py` `RedisLabelState`)."""

    def cursors(self) -> dict[str, int]: ...

    def save(self, labeler: str, seq: int) -> None: ...

    def did(self, labeler: str) -> str | None: ...

    def pin(self, labeler: str, did: str) -> None: ...

    def put_meta(self, name: str, data: object) -> None: ...

    def meta(self, name: str) -> object | None: ...

    def close(self) -> None: ...


class LabelState:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def cursors(self) -> dict[str, int]:
        with self._lock:
            return dict(self._conn.execute("SELECT labeler, seq FROM cursor").fetchall())

    def save(self, labeler: str, seq: int) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO cursor (labeler, seq, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (labeler) DO UPDATE SET seq = excluded.seq, "
                "updated_at = excluded.updated_at",
                (labeler, seq, time.time()),
            )

    def did(self, labeler: str) -> str | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT did FROM labelers WHERE labeler = ?", (labeler,)
            ).fetchone()
        return row[0] if row else None

    def pin(self, labeler: str, did: str) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO labelers (labeler, did) VALUES (?, ?) "
                "ON CONFLICT (labeler) DO UPDATE SET did = excluded.did",
                (labeler, did),
            )

    def put_meta(self, name: str, data: object) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO meta (name, data) VALUES (?, ?) "
                "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
                (name, orjson.dumps(data).decode()),
            )

    def meta(self, name: str) -> object | None:
        with self._lock:
            row = self._conn.execute("SELECT data FROM meta WHERE name = ?", (name,)).fetchone()
        return orjson.loads(row[0]) if row else None

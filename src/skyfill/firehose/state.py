"""A stream's own state: its cursor per source and what it knows of each repo.

One SQLite file per stream (`<workdir>/streams/<stream_id>/state.sqlite`, WAL), written
after the sink has applied a batch: the sink's transaction holds the rows and the cursor
they cover (SQL sinks); this file holds the same cursor plus the per-repo facts the
consumer decides with (the last applied rev, the account status, whether the repo is
desynchronized and why). If a crash falls between the two, the stream resumes from this
file's older cursor and re-applies a batch the sink already holds, which changes nothing.
A repo recorded as desynchronized is fetched again after a restart.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import orjson

_GENERIC = re.compile(r"\b(?:[a-z2-7]{13}|\d+)\b")
"""A TID (rev) or a number (seq) in a reason."""

SCHEMA = """
CREATE TABLE IF NOT EXISTS cursor (
    source TEXT PRIMARY KEY, seq INTEGER NOT NULL, event_time TEXT, updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS repos (
    did TEXT PRIMARY KEY, rev TEXT, status TEXT NOT NULL, phase TEXT NOT NULL, reason TEXT,
    seq INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS repos_by_phase ON repos (phase) WHERE phase != 'active';
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, data TEXT NOT NULL);
"""


@dataclass(slots=True)
class RepoFacts:
    """What the stream knows of one repo."""

    rev: str | None
    status: str
    """The account's status as the stream last saw it (`ok`, `deactivated`, ...)."""
    phase: str = "active"
    """`active` (events applied as they come) or `desynchronized` (waiting for a re-fetch;
    its events are held back)."""
    reason: str | None = None
    """Why the repo is desynchronized (a `#sync`, a gap in `since`, a commit that failed
    verification, a reactivation)."""
    seq: int | None = None
    """The seq of the repo's last applied event: an `#account`, `#identity` or `#sync`
    at or below it is a replay (they carry no rev), and changes nothing."""


class StreamStateStore(Protocol):
    """Where a stream keeps its cursor and per-repo facts: `StreamState` (a SQLite file of
    the stream's own) or `redis_state.RedisStreamState` (a partition of `skyfill index`,
    shared by the workers that take it in turn)."""

    def cursor(self, source: str) -> tuple[int, str | None] | None: ...

    def load_repos(self) -> dict[str, RepoFacts]: ...

    def save(
        self,
        source: str,
        seq: int,
        event_time: str | None,
        repos: Iterable[tuple[str, RepoFacts]],
        stats: dict | None = None,
    ) -> None: ...

    def reset_cursor(self, source: str) -> None: ...

    def put_meta(self, name: str, data: object) -> None: ...

    def meta(self, name: str) -> object | None: ...

    def close(self) -> None: ...


class StreamState:
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

    def cursor(self, source: str) -> tuple[int, str | None] | None:
        """The saved (seq, event time) of `source`, or None if it was never saved."""
        with self._lock:
            row = self._conn.execute(
                "SELECT seq, event_time FROM cursor WHERE source = ?", (source,)
            ).fetchone()
        return (int(row[0]), row[1]) if row else None

    def load_repos(self) -> dict[str, RepoFacts]:
        with self._lock:
            rows = self._conn.execute("SELECT did, rev, status, phase, reason, seq FROM repos")
            return {row[0]: RepoFacts(*row[1:]) for row in rows}

    def save(
        self,
        source: str,
        seq: int,
        event_time: str | None,
        repos: Iterable[tuple[str, RepoFacts]],
        stats: dict | None = None,
    ) -> None:
        """The cursor, the repos changed since the last save and the run's counters
        (`stats`, for `skyfill status`), in one transaction."""
        rows = [(did, f.rev, f.status, f.phase, f.reason, f.seq) for did, f in repos]
        with self._lock:
            conn = self._conn
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.executemany(
                    "INSERT INTO repos (did, rev, status, phase, reason, seq) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (did) DO UPDATE SET rev = excluded.rev, "
                    "status = excluded.status, phase = excluded.phase, reason = excluded.reason, "
                    "seq = excluded.seq",
                    rows,
                )
                conn.execute(
                    "INSERT INTO cursor (source, seq, event_time, updated_at) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, "
                    "event_time = excluded.event_time, updated_at = excluded.updated_at",
                    (source, seq, event_time, time.time()),
                )
                if stats is not None:
                    self._put_meta("stats", {**stats, "updated_at": time.time()})
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

    def reset_cursor(self, source: str) -> None:
        with self._lock:
            self._conn.execute("DELETE FROM cursor WHERE source = ?", (source,))

    def put_stats(self, stats: dict) -> None:
        """The run's facts, for `skyfill status`, stamped with the time they were saved."""
        self.put_meta("stats", {**stats, "updated_at": time.time()})

    def put_meta(self, name: str, data: object) -> None:
        with self._lock:
            self._put_meta(name, data)

    def _put_meta(self, name: str, data: object) -> None:
        self._conn.execute(
            "INSERT INTO meta (name, data) VALUES (?, ?) "
            "ON CONFLICT (name) DO UPDATE SET data = excluded.data",
            (name, orjson.dumps(data).decode()),
        )

    def meta(self, name: str) -> object | None:
        with self._lock:
            row = self._conn.execute("SELECT data FROM meta WHERE name = ?", (name,)).fetchone()
        return orjson.loads(row[0]) if row else None

    def reasons(self, limit: int = 10) -> dict[str, int]:
        """Why repos are not active, most common first (revs and seqs left out, so that
        the same cause counts once)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT reason FROM repos WHERE phase != 'active' AND reason IS NOT NULL"
            ).fetchall()
        counted: dict[str, int] = {}
        for (reason,) in rows:
            key = _GENERIC.sub("…", reason)[:120]
            counted[key] = counted.get(key, 0) + 1
        return dict(sorted(counted.items(), key=lambda kv: -kv[1])[:limit])

    def counts(self) -> dict[str, int]:
        """Repos per phase and per status (for `skyfill status`)."""
        with self._lock:
            phases = self._conn.execute("SELECT phase, count(*) FROM repos GROUP BY phase")
            out = {f"phase:{p}": n for p, n in phases}
            statuses = self._conn.execute("SELECT status, count(*) FROM repos GROUP BY status")
            out.update({f"status:{s}": n for s, n in statuses})
        return out

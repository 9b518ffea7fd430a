"""SQLite stream sink: a stream's changes applied to the `records` and `repos` tables of
one SQLite file (the same tables the backfill's SQLite sink writes), each batch in one
transaction with its cursor in `firehose_cursor`."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skyfill.failpoints import failpoint
from skyfill.sinks.base import LoadScope
from skyfill.sinks.changes import ApplyCounts, ChangeBatch
from skyfill.sinks.exceptions import SinkWriteError, one_line
from skyfill.sinks.sqlite import INDEXES, RECORDS_DDL, REPOS_DDL, SqliteSink
from skyfill.sinks.stream_sql import CURSOR_DDL, ChangeWriter, statements

SQL = statements("?")


def _timestamp(value: datetime | None) -> str | None:
    """ISO text in UTC with microseconds, as the backfill's SQLite sink writes it
    (isoformat: several times faster than strftime, which showed in the put rate)."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


class SqliteStreamSink:
    kind = "sqlite"

    def __init__(self, path: Path, stream_id: str) -> None:
        self.path = Path(path)
        self.target = str(self.path)
        self._stream_id = stream_id
        self._conn: sqlite3.Connection | None = None

    def check(self) -> None:
        SqliteSink(self.path, LoadScope()).check()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=60, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 60000")
            conn.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL stays consistent; a power loss may drop the last batches, and
            # their cursor with them (it is in the same transaction): they are re-applied
            conn.execute("PRAGMA synchronous = NORMAL")
            for ddl in (RECORDS_DDL, REPOS_DDL, CURSOR_DDL, *INDEXES):
                conn.execute(ddl)
            self._conn = conn
        return self._conn

    def cursor(self, source: str) -> int | None:
        row = self._connection().execute(SQL["get_cursor"], (source,)).fetchone()
        return None if row is None else int(row[0])

    def apply(self, batch: ChangeBatch) -> ApplyCounts:
        conn = self._connection()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                with closing(conn.cursor()) as cur:
                    counts = ChangeWriter(cur, SQL, self._stream_id, _timestamp).apply(batch)
                failpoint("stream_applied")  # inside the transaction: a crash rolls back
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:  # not when BEGIN itself failed (a locked file)
                    conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise SinkWriteError(
                f"applying events to {self.path} failed, nothing was changed: {one_line(str(exc))}"
            ) from None
        return counts

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def facts(self) -> dict[str, Any]:
        conn = self._connection()
        records = conn.execute("SELECT count(*) FROM records").fetchone()[0]
        repos = conn.execute("SELECT count(*) FROM repos").fetchone()[0]
        return {"records": records, "repos": repos}

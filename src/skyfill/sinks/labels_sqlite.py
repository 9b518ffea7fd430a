"""SQLite label sink: the `labels` table, the `labels_current` view and `labeler_cursor`
in one SQLite file (the same file a stream or a backfill may write), each batch in one
transaction with its cursor (`labels_sql.py` has the rules)."""

from __future__ import annotations

import sqlite3
import threading
from contextlib import closing
from pathlib import Path
from typing import Any

from skyfill.failpoints import failpoint
from skyfill.sinks.base import LoadScope
from skyfill.sinks.exceptions import SinkUnavailable, SinkWriteError, one_line
from skyfill.sinks.labels import LabelBatch
from skyfill.sinks.labels_sql import (
    CURSOR_DDL,
    KEY_INDEX,
    URI_INDEX,
    current_view,
    labels_ddl,
    statements,
    write,
)
from skyfill.sinks.sqlite import SqliteSink
from skyfill.sinks.stream_sql import now_text

SQL = statements("?")
SCHEMA = (
    labels_ddl("BOOLEAN", "BLOB"),
    KEY_INDEX,
    URI_INDEX,
    CURSOR_DDL,
    "CREATE VIEW IF NOT EXISTS labels_current AS "
    + current_view("julianday(exp) > julianday('now')"),
)


class SqliteLabelSink:
    kind = "sqlite"

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.target = str(self.path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        SqliteSink(self.path, LoadScope()).check()

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=60, check_same_thread=False
            )
            try:
                conn.execute("PRAGMA busy_timeout = 60000")
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
                for ddl in SCHEMA:
                    conn.execute(ddl)
            except sqlite3.Error as exc:
                conn.close()
                raise SinkUnavailable(
                    f"sqlite: {self.path}: the labels tables: {one_line(str(exc))}"
                ) from None
            self._conn = conn
        return self._conn

    def cursor(self, labeler: str) -> int | None:
        with self._lock:
            row = self._connection().execute(SQL["get_cursor"], (labeler,)).fetchone()
        return None if row is None else int(row[0])

    def apply(self, batch: LabelBatch) -> int:
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    with closing(conn.cursor()) as cur:
                        written = write(cur, SQL, batch, now_text())
                    failpoint("labels_applied")  # inside the transaction: a crash rolls back
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as exc:
                raise SinkWriteError(
                    f"writing labels to {self.path} failed, nothing was changed: "
                    f"{one_line(str(exc))}"
                ) from None
        return written

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def facts(self) -> dict[str, Any]:
        with self._lock:
            conn = self._connection()
            labels = conn.execute(SQL["count"]).fetchone()[0]
            current = conn.execute(SQL["count_current"]).fetchone()[0]
        return {"labels": labels, "labels_current": current}

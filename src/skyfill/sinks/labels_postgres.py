"""PostgreSQL label sink: the `labels` table, the `labels_current` view and
`labeler_cursor`, each batch in one transaction with its cursor (`labels_sql.py` has the
rules). Text holding U+0000, which PostgreSQL cannot store, becomes U+FFFD."""

from __future__ import annotations

import threading
from dataclasses import replace
from typing import Any

import psycopg

from skyfill.failpoints import failpoint
from skyfill.sinks.base import LoadScope
from skyfill.sinks.exceptions import SinkUnavailable, SinkWriteError
from skyfill.sinks.labels import LABEL_COLUMNS, LabelBatch, LabelRow
from skyfill.sinks.labels_sql import (
    CURSOR_COLUMNS,
    CURSOR_DDL,
    KEY_INDEX,
    URI_INDEX,
    current_view,
    labels_ddl,
    statements,
    write,
)
from skyfill.sinks.postgres import PostgresSink
from skyfill.sinks.stream_sql import now_text

SQL = statements("%s")
SCHEMA = (labels_ddl("boolean", "bytea"), KEY_INDEX, URI_INDEX, CURSOR_DDL)
VIEW = "CREATE VIEW labels_current AS " + current_view("exp::timestamptz > now()")


class PostgresLabelSink:
    kind = "postgresql"

    def __init__(self, url: str, password: str | None = None) -> None:
        self._base = PostgresSink(url, LoadScope(), password=password)
        self.target = url
        self._conn: psycopg.Connection | None = None
        self._lock = threading.Lock()

    def check(self) -> None:
        self._base.check((("labels", LABEL_COLUMNS), ("labeler_cursor", CURSOR_COLUMNS)))

    def _connection(self) -> psycopg.Connection:
        if self._conn is None:
            conn = self._base.connect_raw()
            try:
                with conn.transaction():
                    for ddl in SCHEMA:
                        conn.execute(ddl)
                    found = conn.execute("SELECT to_regclass('labels_current')").fetchone()
                    if found is None or found[0] is None:
                        conn.execute(VIEW)
            except psycopg.Error as exc:
                conn.close()
                raise SinkUnavailable(
                    f"{self.target}: the labels tables: {self._base.message(exc)}"
                ) from None
            self._conn = conn
        return self._conn

    def cursor(self, labeler: str) -> int | None:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                row = conn.execute(SQL["get_cursor"], (labeler,)).fetchone()
        return None if row is None else int(row[0])

    def apply(self, batch: LabelBatch) -> int:
        safe = LabelBatch(batch.labeler, batch.cursor, [_no_nul(row) for row in batch.rows])
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction(), conn.cursor() as cur:
                    written = write(cur, SQL, safe, now_text())
                    failpoint("labels_applied")  # inside the transaction: a crash rolls back
            except psycopg.Error as exc:
                self._close()
                raise SinkWriteError(
                    f"writing labels to {self.target} failed, nothing was changed: "
                    f"{self._base.message(exc)}"
                ) from None
        return written

    def close(self) -> None:
        with self._lock:
            self._close()

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def facts(self) -> dict[str, Any]:
        with self._lock:
            conn = self._connection()
            with conn.transaction():
                labels = conn.execute(SQL["count"]).fetchone()
                current = conn.execute(SQL["count_current"]).fetchone()
        return {
            "labels": labels[0] if labels else 0,
            "labels_current": current[0] if current else 0,
        }


def _no_nul(row: LabelRow) -> LabelRow:
    """The row with U+0000 in its uri and val replaced (PostgreSQL refuses it in text;
    the other text columns are of a syntax without it)."""
    if "\x00" not in row.uri and "\x00" not in row.val:
        return row
    return replace(
        row, uri=row.uri.replace("\x00", "\ufffd"), val=row.val.replace("\x00", "\ufffd")
    )

"""PostgreSQL stream sink: a stream's changes applied to the `records` and `repos` tables
(the backfill's PostgreSQL tables), each batch in one transaction with its cursor in
`firehose_cursor`. Text holding U+0000 (which PostgreSQL cannot store) becomes U+FFFD,
as in the backfill's load. The changes go through COPY (`postgres_copy.CopyWriter`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import psycopg

from skyfill.failpoints import failpoint
from skyfill.sinks.base import LoadScope
from skyfill.sinks.changes import ApplyCounts, ChangeBatch
from skyfill.sinks.exceptions import SinkWriteError
from skyfill.sinks.postgres import INDEXES, RECORDS_DDL, REPOS_DDL, PostgresSink, postgres_safe_json
from skyfill.sinks.postgres_copy import STAGES, CopyWriter
from skyfill.sinks.stream_sql import CURSOR_DDL, statements

SQL = statements("%s", "::jsonb")


def _timestamp(value: datetime | None) -> datetime | None:
    return value


class PostgresStreamSink:
    kind = "postgresql"

    def __init__(self, url: str, stream_id: str, password: str | None = None) -> None:
        self._base = PostgresSink(url, LoadScope(), password=password)
        self.target = url
        self._stream_id = stream_id
        self._conn: psycopg.Connection | None = None

    def check(self) -> None:
        self._base.check()

    def _connection(self) -> psycopg.Connection:
        if self._conn is None:
            conn = self._base.connect_raw()
            with conn.transaction():
                for ddl in (RECORDS_DDL, REPOS_DDL, CURSOR_DDL, *INDEXES, *STAGES):
                    conn.execute(ddl)
            self._conn = conn
        return self._conn

    def cursor(self, source: str) -> int | None:
        conn = self._connection()
        with conn.transaction():
            row = conn.execute(SQL["get_cursor"], (source,)).fetchone()
        return None if row is None else int(row[0])

    def apply(self, batch: ChangeBatch) -> ApplyCounts:
        conn = self._connection()
        try:
            with conn.transaction(), conn.cursor() as cur:
                writer = CopyWriter(cur, SQL, self._stream_id, _timestamp, postgres_safe_json)
                counts = writer.apply(batch)
                failpoint("stream_applied")  # inside the transaction: a crash rolls back
        except psycopg.Error as exc:
            self.close()
            raise SinkWriteError(
                f"applying events to {self.target} failed, nothing was changed: "
                f"{self._base.message(exc)}"
            ) from None
        return counts

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def facts(self) -> dict[str, Any]:
        conn = self._connection()
        with conn.transaction():
            records = conn.execute("SELECT count(*) FROM records").fetchone()
            repos = conn.execute("SELECT count(*) FROM repos").fetchone()
        return {"records": records[0] if records else 0, "repos": repos[0] if repos else 0}

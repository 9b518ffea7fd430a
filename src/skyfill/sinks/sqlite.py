"""SQLite sink: the job merged into tables `records` and `repos` of one SQLite file.

The same tables, columns and refresh rules as the PostgreSQL sink (sql.py,
docs/postgres.md), with SQLite's types: `record` is JSON text (query it with ->> or
json_extract), `created_at` and `fetched_at` are ISO 8601 text in UTC with microseconds
(`2025-01-01T12:00:00.000000Z`, so text order is time order). The load is one
transaction (BEGIN IMMEDIATE: other writers wait, readers in WAL mode do not), fed with
executemany from staging tables, so a replayed load changes nothing and a crash leaves the
file as it was.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pyarrow as pa

from skyfill.failpoints import failpoint
from skyfill.sinks.base import LoadScope
from skyfill.sinks.exceptions import SinkUnavailable, SinkWriteError, one_line
from skyfill.sinks.sql import (
    GONE_SQL,
    KEPT_SQL,
    RECORD_COLUMNS,
    RECORD_KEY,
    RECORD_VALUES,
    REPO_COLUMNS,
    REPO_LEARNT,
    REPO_OUTCOME,
    STAGE_RECORDS,
    STAGE_REPOS,
    Stopwatch,
    load_counts,
    scope_predicate,
)
from skyfill.storage import arrow_compute as pc

BUSY_TIMEOUT_MS = 60_000
ISO_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
"""Arrow's %S of a microsecond timestamp carries the fraction: 2025-01-01T12:00:00.000000Z."""

RECORDS_DDL = """
CREATE TABLE IF NOT EXISTS records (
    did         TEXT NOT NULL,
    collection  TEXT NOT NULL,
    rkey        TEXT NOT NULL,
    uri         TEXT NOT NULL,
    cid         TEXT NOT NULL,
    rev         TEXT NOT NULL,
    created_at  TEXT,
    record      TEXT NOT NULL,
    job_id      TEXT NOT NULL,
    PRIMARY KEY (did, collection, rkey)
) WITHOUT ROWID"""
REPOS_DDL = """
CREATE TABLE IF NOT EXISTS repos (
    did           TEXT PRIMARY KEY NOT NULL,
    handle        TEXT,
    pds           TEXT,
    status        TEXT NOT NULL,
    rev           TEXT,
    commit_cid    TEXT,
    record_count  INTEGER,
    car_bytes     INTEGER,
    attempts      INTEGER,
    error         TEXT,
    fetched_at    TEXT
) WITHOUT ROWID"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS records_collection_created_at ON records (collection, created_at)",
    "CREATE INDEX IF NOT EXISTS repos_status ON repos (status)",
)
STAGING = (
    f"DROP TABLE IF EXISTS temp.{STAGE_REPOS}",
    f"DROP TABLE IF EXISTS temp.{STAGE_RECORDS}",
    f"CREATE TEMP TABLE {STAGE_REPOS} ({', '.join(REPO_COLUMNS)}, PRIMARY KEY (did))",
    f"""CREATE TEMP TABLE {STAGE_RECORDS} ({", ".join(RECORD_COLUMNS)},
        PRIMARY KEY ({", ".join(RECORD_KEY)})) WITHOUT ROWID""",
)


class SqliteSink:
    kind = "sqlite"

    def __init__(self, path: Path, scope: LoadScope) -> None:
        self.path = Path(path)
        self.target = str(self.path)
        self._scope = scope

    def check(self) -> None:
        directory = self.path.parent
        if not directory.is_dir():
            raise SinkUnavailable(f"sqlite: no directory {directory} for {self.path}")
        if not os.access(directory, os.W_OK | os.X_OK):
            raise SinkUnavailable(f"sqlite: cannot write in {directory}")
        if self.path.exists():
            try:
                with closing(self._connect(f"file:{self.path}?mode=ro")) as conn:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error as exc:
                raise SinkUnavailable(f"sqlite: {self.path}: {one_line(str(exc))}") from None

    def _connect(self, uri: str | None = None) -> sqlite3.Connection:
        conn = sqlite3.connect(
            uri or str(self.path), uri=uri is not None, isolation_level=None, timeout=60
        )
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        return conn

    def write(self, records: pa.RecordBatchReader, repos: pa.RecordBatchReader) -> dict[str, Any]:
        self.check()
        try:
            with closing(self._connect()) as conn:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("BEGIN IMMEDIATE")
                try:
                    facts = self._load(conn, records, repos)
                    failpoint("sink_loaded")  # inside the transaction: a crash rolls back
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
        except sqlite3.Error as exc:
            raise SinkWriteError(
                f"loading into {self.path} failed, nothing was changed: {one_line(str(exc))}"
            ) from None
        return facts

    def _load(
        self, conn: sqlite3.Connection, records: pa.RecordBatchReader, repos: pa.RecordBatchReader
    ) -> dict[str, Any]:
        watch = Stopwatch()
        with watch.step("prepare"):
            for statement in (RECORDS_DDL, REPOS_DDL, *INDEXES, *STAGING):
                conn.execute(statement)
        with watch.step("copy"):
            repo_rows = _stage(conn, STAGE_REPOS, REPO_COLUMNS, repos)
            record_rows = _stage(conn, STAGE_RECORDS, RECORD_COLUMNS, records)
        with watch.step("upsert_records"):
            inserted, updated = _upsert(
                conn, _upsert_records(), _new_keys(STAGE_RECORDS, RECORD_KEY)
            )
        with watch.step("delete"):
            deleted = self._delete_gone(conn)
        with watch.step("upsert_repos"):
            kept = _upsert(conn, _upsert_repos(kept=True), _new_keys(STAGE_REPOS, ("did",), True))
            others = _upsert(
                conn, _upsert_repos(kept=False), _new_keys(STAGE_REPOS, ("did",), False)
            )
        for statement in STAGING[:2]:
            conn.execute(statement)
        return {
            "sink": {
                "kind": self.kind,
                "target": self.target,
                "records": load_counts(record_rows, inserted, updated, deleted),
                "repos": load_counts(repo_rows, kept[0] + others[0], kept[1] + others[1]),
                "seconds": watch.seconds,
            }
        }

    def _delete_gone(self, conn: sqlite3.Connection) -> int:
        scope, params = scope_predicate(
            self._scope, "collection", lambda column, p: f"{column} GLOB {p} || '*'", "?"
        )
        deleted = conn.execute(
            f"""DELETE FROM records WHERE {scope} AND did IN
                (SELECT did FROM {STAGE_REPOS} WHERE status IN ({GONE_SQL}))""",
            params,
        ).rowcount
        if self._scope.complete:
            deleted += conn.execute(
                f"""DELETE FROM records WHERE {scope}
                    AND did IN (SELECT did FROM {STAGE_REPOS} WHERE status = 'ok')
                    AND NOT EXISTS (SELECT 1 FROM {STAGE_RECORDS} t WHERE t.did = records.did
                        AND t.collection = records.collection AND t.rkey = records.rkey)""",
                params,
            ).rowcount
        return deleted


def _upsert_records() -> str:
    columns = ", ".join(RECORD_COLUMNS)
    updates = ", ".join(f"{c} = excluded.{c}" for c in (*RECORD_VALUES, "job_id"))
    mine = ", ".join(f"records.{c}" for c in RECORD_VALUES)
    theirs = ", ".join(f"excluded.{c}" for c in RECORD_VALUES)
    return f"""
        INSERT INTO records ({columns}) SELECT {columns} FROM {STAGE_RECORDS} WHERE true
        ON CONFLICT ({", ".join(RECORD_KEY)}) DO UPDATE SET {updates}
        WHERE ({mine}) IS NOT ({theirs})"""


def _upsert_repos(kept: bool) -> str:
    columns = ", ".join(REPO_COLUMNS)
    if kept:
        values = {c: f"excluded.{c}" for c in REPO_OUTCOME}
        values |= {c: f"coalesce(excluded.{c}, repos.{c})" for c in REPO_LEARNT}
    else:
        values = {c: f"excluded.{c}" for c in REPO_COLUMNS if c != "did"}
    updates = ", ".join(f"{c} = {v}" for c, v in values.items())
    mine = ", ".join(f"repos.{c}" for c in values)
    theirs = ", ".join(values.values())
    return f"""
        INSERT INTO repos ({columns}) SELECT {columns} FROM {STAGE_REPOS}
        WHERE {_kept_filter("status", kept)}
        ON CONFLICT (did) DO UPDATE SET {updates}
        WHERE ({mine}) IS NOT ({theirs})"""


def _kept_filter(column: str, kept: bool) -> str:
    """Rows of `failed`/`invalid_repo` DIDs, or of every other one (a NULL status among
    them, to be refused by the NOT NULL constraint rather than silently skipped)."""
    if kept:
        return f"{column} IN ({KEPT_SQL})"
    return f"coalesce({column}, '') NOT IN ({KEPT_SQL})"


def _new_keys(stage: str, key: tuple[str, ...], kept: bool | None = None) -> str:
    """Count the staged rows whose key the table does not hold yet (the inserts-to-be)."""
    table = "records" if stage == STAGE_RECORDS else "repos"
    match = " AND ".join(f"t.{c} = s.{c}" for c in key)
    status = ""
    if kept is not None:
        status = f"AND {_kept_filter('s.status', kept)}"
    return f"""SELECT count(*) FROM {stage} s
        WHERE NOT EXISTS (SELECT 1 FROM {table} t WHERE {match}) {status}"""


def _upsert(conn: sqlite3.Connection, upsert: str, new_keys: str) -> tuple[int, int]:
    """Run an upsert: (rows inserted, rows updated)."""
    inserted = conn.execute(new_keys).fetchone()[0]
    before = conn.total_changes
    conn.execute(upsert)
    return inserted, conn.total_changes - before - inserted


def _stage(
    conn: sqlite3.Connection, table: str, columns: tuple[str, ...], reader: pa.RecordBatchReader
) -> int:
    placeholders = ", ".join("?" for _ in columns)
    statement = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({placeholders})"
    rows = 0
    for batch in reader:
        conn.executemany(statement, _rows(batch.select(list(columns))))
        rows += batch.num_rows
    return rows


def _rows(batch: pa.RecordBatch) -> Iterator[tuple]:
    """The batch's rows as Python tuples, timestamps as ISO text."""
    columns = []
    for array in batch.columns:
        if pa.types.is_timestamp(array.type):
            array = pc.strftime(array, ISO_FORMAT)
        columns.append(array.to_pylist())
    return zip(*columns, strict=True)

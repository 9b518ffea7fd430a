"""PostgreSQL sink: the job merged into tables `records` and `repos` (see docs/postgres.md).

The load is one transaction, serialised with other skyfill loads into the same database by
an advisory lock: the tables are created if absent, the job's rows are streamed with COPY
(CSV made by Arrow) into temporary staging tables, then upserted and the refresh deletes
applied (sql.py); into an empty `records` table (a first load) they go straight in. A
replayed load (resume, retry) changes no row; a crash or error rolls everything back. The
password of the URL never appears in a message or a manifest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, LiteralString

import orjson
import psycopg
import pyarrow as pa
import pyarrow.csv as pacsv
from psycopg.conninfo import conninfo_to_dict

from skyfill.failpoints import failpoint
from skyfill.sinks.base import LoadScope
from skyfill.sinks.exceptions import SinkError, SinkUnavailable, SinkWriteError, one_line
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
    changed,
    load_counts,
    scope_predicate,
)
from skyfill.storage import arrow_compute as pc
from skyfill.storage.prefetch import ahead

CONNECT_TIMEOUT = 10
CSV_ROWS = 8192
"""Rows per piece of CSV sent to COPY (a few MB): memory stays small, whatever the batches."""
LOCK_KEY = 0x736B7966696C6C  # "skyfill": one load at a time per database
NUL_JSON = "\\u0000"
"""How JSON text spells U+0000, which jsonb cannot hold."""

RECORDS_DDL = """
CREATE TABLE IF NOT EXISTS records (
    did         text        NOT NULL,
    collection  text        NOT NULL,
    rkey        text        NOT NULL,
    uri         text        NOT NULL,
    cid         text        NOT NULL,
    rev         text        NOT NULL,
    created_at  timestamptz,
    record      jsonb       NOT NULL,
    job_id      text        NOT NULL,
    PRIMARY KEY (did, collection, rkey)
)"""
REPOS_DDL = """
CREATE TABLE IF NOT EXISTS repos (
    did           text PRIMARY KEY,
    handle        text,
    pds           text,
    status        text NOT NULL,
    rev           text,
    commit_cid    text,
    record_count  bigint,
    car_bytes     bigint,
    attempts      integer,
    error         text,
    fetched_at    timestamptz
)"""
INDEXES = (
    "CREATE INDEX IF NOT EXISTS records_collection_created_at ON records (collection, created_at)",
    "CREATE INDEX IF NOT EXISTS repos_status ON repos (status)",
)
DROP_RECORD_INDEXES = (
    "ALTER TABLE records DROP CONSTRAINT records_pkey",
    "DROP INDEX records_collection_created_at",
)
BUILD_RECORD_INDEXES = (
    "ALTER TABLE records ADD CONSTRAINT records_pkey PRIMARY KEY (did, collection, rkey)",
    INDEXES[0],
)
"""A first load's: the table is empty and locked (ALTER TABLE) until the commit."""
STAGING = (
    f"""CREATE TEMP TABLE {STAGE_REPOS} (
        did text, handle text, pds text, status text, rev text, commit_cid text,
        record_count bigint, car_bytes bigint, attempts integer, error text,
        fetched_at timestamptz) ON COMMIT DROP""",
    f"""CREATE TEMP TABLE {STAGE_RECORDS} (
        did text, collection text, rkey text, uri text, cid text, rev text,
        created_at timestamptz, record jsonb, job_id text) ON COMMIT DROP""",
)


class PostgresSink:
    kind = "postgresql"

    def __init__(self, url: str, scope: LoadScope, password: str | None = None) -> None:
        self.target = url  # stored form: no password
        self._url = url
        self._scope = scope
        self._password = password

    # -- connecting ---------------------------------------------------------------------

    def _connect_options(self) -> dict[str, Any]:
        options: dict[str, Any] = {"application_name": "skyfill"}
        if "connect_timeout" not in conninfo_to_dict(self._url):
            options["connect_timeout"] = CONNECT_TIMEOUT
        if self._password:
            options["password"] = self._password
        return options

    @contextmanager
    def _connect(self) -> Iterator[psycopg.Connection]:
        options = self._connect_options()
        try:
            conn = psycopg.connect(self._url, **options)
        except psycopg.Error as exc:
            raise SinkUnavailable(self._unavailable(exc)) from None
        try:
            yield conn
        finally:
            conn.close()

    def connect_raw(self) -> psycopg.Connection:
        """A connection of its own (autocommit: each use opens its own transaction),
        for a long-running writer such as a stream; the caller closes it."""
        try:
            return psycopg.connect(self._url, autocommit=True, **self._connect_options())
        except psycopg.Error as exc:
            raise SinkUnavailable(self._unavailable(exc)) from None

    def message(self, exc: BaseException) -> str:
        return self._message(exc)

    def _unavailable(self, exc: psycopg.Error) -> str:
        message = f"cannot connect to {self._url}: {self._message(exc)}"
        if "password" in str(exc) and not self._password:
            message += (
                " (the password of a --sink URL is never stored: give it with PGPASSWORD "
                "or ~/.pgpass)"
            )
        return message

    def _message(self, exc: BaseException) -> str:
        return one_line(str(exc), self._password)

    def check(self, tables: tuple[tuple[str, tuple[str, ...]], ...] = ()) -> None:
        """Connect; make sure the tables (default: records and repos) can be created, or
        that existing ones fit."""
        wanted = tables or (("records", RECORD_COLUMNS), ("repos", REPO_COLUMNS))
        with self._connect() as conn:
            try:
                for table, columns in wanted:
                    self._check_table(conn, table, columns)
            except psycopg.Error as exc:
                raise SinkUnavailable(f"{self._url}: {self._message(exc)}") from None
            finally:
                conn.rollback()

    def _check_table(self, conn: psycopg.Connection, table: str, columns: tuple) -> None:
        found = conn.execute(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            [table],
        ).fetchall()
        if not found:
            row = conn.execute(
                "SELECT current_schema() IS NOT NULL "
                "AND has_schema_privilege(current_schema(), 'CREATE')"
            ).fetchone()
            if not (row and row[0]):
                raise SinkUnavailable(
                    f"{self._url}: no table {table} and no right to create it in the current schema"
                )
            return
        missing = sorted(set(columns) - {name for (name,) in found})
        if missing:
            raise SinkUnavailable(
                f"{self._url}: table {table} exists but lacks column(s) {', '.join(missing)}: "
                "not a skyfill table (use another database or schema, e.g. "
                "?options=-csearch_path%3Dskyfill)"
            )

    # -- loading ------------------------------------------------------------------------

    def write(self, records: pa.RecordBatchReader, repos: pa.RecordBatchReader) -> dict[str, Any]:
        with self._connect() as conn:
            try:
                with conn.transaction():
                    facts = self._load(conn, records, repos)
                    failpoint("sink_loaded")  # inside the transaction: a crash rolls back
            except SinkError:
                raise
            except psycopg.OperationalError as exc:
                raise SinkUnavailable(f"{self._url}: {self._message(exc)}") from None
            except psycopg.Error as exc:
                raise SinkWriteError(
                    f"loading into {self._url} failed, nothing was changed: {self._message(exc)}"
                ) from None
        return facts

    def _load(
        self, conn: psycopg.Connection, records: pa.RecordBatchReader, repos: pa.RecordBatchReader
    ) -> dict[str, Any]:
        watch = Stopwatch()
        with conn.cursor() as cur:
            with watch.step("prepare"):
                cur.execute("SELECT pg_advisory_xact_lock(%s)", [LOCK_KEY])
                for statement in (RECORDS_DDL, REPOS_DDL, *INDEXES, *STAGING):
                    cur.execute(statement)
                first = _empty(cur, "records")
            with watch.step("copy"):
                repo_rows = _copy(cur, STAGE_REPOS, REPO_COLUMNS, repos)
                # Into an empty table every row is new (the job's rows are unique by key):
                # straight in, without staging, upsert or deletes, and its indexes built
                # after the rows, in bulk (twice as fast as kept up row by row).
                if first:
                    for statement in DROP_RECORD_INDEXES:
                        cur.execute(statement)
                target = "records" if first else STAGE_RECORDS
                record_rows = _copy(cur, target, RECORD_COLUMNS, records)
            with watch.step("index"):
                if first:
                    for statement in BUILD_RECORD_INDEXES:
                        cur.execute(statement)
                # Keys of the staged rows, built in bulk after COPY: the refresh's anti-join
                # (which rows did the job not see?) looks them up instead of scanning.
                if not first:
                    cur.execute(
                        f"ALTER TABLE {STAGE_RECORDS} ADD PRIMARY KEY ({', '.join(RECORD_KEY)})"
                    )
                    cur.execute(f"ANALYZE {STAGE_RECORDS}")
                cur.execute(f"ALTER TABLE {STAGE_REPOS} ADD PRIMARY KEY (did)")
                cur.execute(f"ANALYZE {STAGE_REPOS}")
            if first:
                inserted, updated, deleted = record_rows, 0, 0
            else:
                with watch.step("upsert_records"):
                    inserted, updated = _counted(cur, self._upsert_records())
                with watch.step("delete"):
                    deleted = self._delete_gone(cur)
            with watch.step("upsert_repos"):
                kept = _counted(cur, _upsert_repos(kept=True))
                others = _counted(cur, _upsert_repos(kept=False))
        return {
            "sink": {
                "kind": self.kind,
                "target": self.target,
                "records": load_counts(record_rows, inserted, updated, deleted),
                "repos": load_counts(repo_rows, kept[0] + others[0], kept[1] + others[1]),
                "seconds": watch.seconds,
            }
        }

    def _upsert_records(self) -> LiteralString:
        columns = ", ".join(RECORD_COLUMNS)
        updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in (*RECORD_VALUES, "job_id"))
        return f"""
            INSERT INTO records AS r ({columns}) SELECT {columns} FROM {STAGE_RECORDS}
            ON CONFLICT ({", ".join(RECORD_KEY)}) DO UPDATE SET {updates}
            WHERE {changed("r", RECORD_VALUES)}
            RETURNING (xmax = 0) AS inserted"""

    def _delete_gone(self, cur: psycopg.Cursor) -> int:
        scope, params = scope_predicate(
            self._scope, "r.collection", lambda column, p: f"starts_with({column}, {p})", "%s"
        )
        unseen: LiteralString = ""
        if self._scope.complete:
            unseen = f"""OR (s.status = 'ok' AND NOT EXISTS (
                SELECT 1 FROM {STAGE_RECORDS} t
                WHERE t.did = r.did AND t.collection = r.collection AND t.rkey = r.rkey))"""
        cur.execute(
            f"""DELETE FROM records r USING {STAGE_REPOS} s
                WHERE r.did = s.did AND {scope} AND (s.status IN ({GONE_SQL}) {unseen})""",
            params,
        )
        return cur.rowcount


def _upsert_repos(kept: bool) -> LiteralString:
    """Repos rows of `failed`/`invalid_repo` DIDs (kept=True: only the outcome changes) or
    of every other DID (the whole row)."""
    columns = ", ".join(REPO_COLUMNS)
    values: dict[LiteralString, LiteralString]
    if kept:
        values = {c: f"EXCLUDED.{c}" for c in REPO_OUTCOME}
        values |= {c: f"COALESCE(EXCLUDED.{c}, p.{c})" for c in REPO_LEARNT}
        where = f"status IN ({KEPT_SQL})"
    else:
        values = {c: f"EXCLUDED.{c}" for c in REPO_COLUMNS if c != "did"}
        where = f"coalesce(status, '') NOT IN ({KEPT_SQL})"  # a NULL is refused below
    updates = ", ".join(f"{c} = {v}" for c, v in values.items())
    mine = ", ".join(f"p.{c}" for c in values)
    theirs = ", ".join(values.values())
    return f"""
        INSERT INTO repos AS p ({columns}) SELECT {columns} FROM {STAGE_REPOS} WHERE {where}
        ON CONFLICT (did) DO UPDATE SET {updates}
        WHERE ({mine}) IS DISTINCT FROM ({theirs})
        RETURNING (xmax = 0) AS inserted"""


def _empty(cur: psycopg.Cursor, table: LiteralString) -> bool:
    cur.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {table})")
    row = cur.fetchone()
    assert row is not None
    return bool(row[0])


def _counted(cur: psycopg.Cursor, upsert: LiteralString) -> tuple[int, int]:
    """Run an upsert that returns `inserted` per changed row: (inserted, updated)."""
    cur.execute(
        f"""WITH changed AS ({upsert})
            SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
            FROM changed"""
    )
    row = cur.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def _copy(
    cur: psycopg.Cursor,
    table: LiteralString,
    columns: tuple[LiteralString, ...],
    reader: pa.RecordBatchReader,
) -> int:
    """Stream the reader's batches into `table` with COPY (CSV); return the rows sent.

    The CSV of the next batch is made in a background thread while this one is sent and
    parsed by the server; at most two batches are made ahead, so memory stays bounded."""
    rows = 0
    statement = f"COPY {table} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
    with cur.copy(statement) as copy:
        for count, data in ahead(_csv(reader, columns)):
            copy.write(data)
            rows += count
    return rows


def _csv(
    reader: pa.RecordBatchReader, columns: tuple[str, ...]
) -> Iterator[tuple[int, memoryview]]:
    """(rows, CSV text) of slices of CSV_ROWS rows: PostgreSQL's CSV, made by Arrow (quoted
    strings, empty unquoted NULLs, ISO timestamps), a few MB at a time."""
    options = pacsv.WriteOptions(include_header=False)
    for batch in reader:
        batch = _postgres_safe(batch.select(list(columns)))
        for start in range(0, batch.num_rows, CSV_ROWS):
            piece = batch.slice(start, CSV_ROWS)
            out = pa.BufferOutputStream()
            pacsv.write_csv(piece, out, options)
            yield piece.num_rows, memoryview(out.getvalue())


_NUL = re.compile(b"\x00")
_NUL_JSON = re.compile(re.escape(NUL_JSON.encode()))


def _may_hold(array: pa.Array, pattern: re.Pattern[bytes]) -> bool:
    """Whether the bytes of a string array may hold `pattern` (a fast scan of its data
    buffer, without copying it; a hit outside the array's slice only costs the exact
    check)."""
    data = array.buffers()[2]
    return data is not None and pattern.search(memoryview(data)) is not None


def _postgres_safe(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Text without U+0000, which PostgreSQL cannot store in text or jsonb: it becomes
    U+FFFD (in `record`, also where the JSON spells it as an escape)."""
    arrays = []
    for name, array in zip(batch.schema.names, batch.columns, strict=True):
        if pa.types.is_string(array.type):
            if _may_hold(array, _NUL):
                array = pc.replace_substring(array, "\x00", "\ufffd")
            if name == "record" and _may_hold(array, _NUL_JSON):
                array = _replace_json_nul(array)
        arrays.append(array)
    return pa.RecordBatch.from_arrays(arrays, schema=batch.schema)


def _replace_json_nul(array: pa.Array) -> pa.Array:
    """Escaped U+0000 in JSON text -> U+FFFD, decoding only the rows that hold one."""
    out = [None if text is None else postgres_safe_json(text) for text in array.to_pylist()]
    return pa.array(out, array.type)


def postgres_safe_json(text: str) -> str:
    """JSON text PostgreSQL can store: U+0000, raw or escaped, becomes U+FFFD (decoding
    only text that may hold one: a literal backslash before `u0000` is not an escape,
    hence the round trip)."""
    if "\x00" not in text and NUL_JSON not in text:
        return text

    def fix(value: Any) -> Any:
        if isinstance(value, str):
            return value.replace("\x00", "\ufffd")
        if isinstance(value, list):
            return [fix(v) for v in value]
        if isinstance(value, dict):
            return {fix(k): fix(v) for k, v in value.items()}
        return value

    return orjson.dumps(fix(orjson.loads(text))).decode()

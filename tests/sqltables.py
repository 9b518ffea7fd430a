"""Reading the tables a SQL sink wrote (PostgreSQL or SQLite), normalised for comparison:
timestamps as aware datetimes, `record` as parsed JSON."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from contextlib import closing
from datetime import datetime
from typing import Any

import psycopg

from skyfill.sinks.factory import parse_sink_url

ORDER = {"records": "did, collection, rkey", "repos": "did"}
TIME_COLUMNS = ("created_at", "fetched_at")


def rows(url: str, table: str, password: str | None = None) -> list[dict[str, Any]]:
    """Every row of `table` (records or repos) in key order, as dicts."""
    query = f"SELECT * FROM {table} ORDER BY {ORDER[table]}"
    parsed = parse_sink_url(url)
    if parsed.kind == "sqlite":
        with closing(sqlite3.connect(parsed.path)) as conn:
            conn.row_factory = sqlite3.Row
            raw = [dict(row) for row in conn.execute(query)]
        for row in raw:
            for column in TIME_COLUMNS:
                if row.get(column) is not None:
                    row[column] = datetime.fromisoformat(row[column])
            if "record" in row:
                row["record"] = json.loads(row["record"])
        return raw
    with psycopg.connect(url, password=password) as conn, conn.cursor() as cur:
        cur.execute(query)
        names = [d.name for d in cur.description or ()]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def table_exists(url: str, table: str, password: str | None = None) -> bool:
    """Whether `table` exists, as the database's catalogue says (any error is raised: a
    database that cannot be read is not one without the table)."""
    parsed = parse_sink_url(url)
    if parsed.kind == "sqlite":
        assert parsed.path is not None
        if not parsed.path.exists():
            return False  # connecting would create it
        with closing(sqlite3.connect(parsed.path)) as conn:
            query = "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?"
            return conn.execute(query, (table,)).fetchone() is not None
    with psycopg.connect(url, password=password) as conn, conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        found = cur.fetchone()
        return bool(found and found[0])


def records_by_did(url: str) -> dict[str, set[tuple[str, str]]]:
    """{did: {(collection/rkey, cid)}}, as tests.helpers.records_by_did for Parquet."""
    out: dict[str, set[tuple[str, str]]] = {}
    for row in rows(url, "records"):
        out.setdefault(row["did"], set()).add((f"{row['collection']}/{row['rkey']}", row["cid"]))
    return out


def digest(url: str, table: str, without: tuple[str, ...] = ()) -> str:
    """A hash of the whole table (minus some columns): equal hashes, equal tables."""
    text = json.dumps(
        [{k: v for k, v in row.items() if k not in without} for row in rows(url, table)],
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256(text.encode()).hexdigest()

"""Compare what a firehose consumer wrote (SQLite, PostgreSQL, a Parquet records dataset)
with a truth file (firehose.mjs, refpds net.mjs, staticnet gen.mjs format).

For every DID of the truth: its handle, its status, and for an `ok` repo the exact set of
(`collection/rkey`, cid) rows. A repo that is not ok has no rows, or (by default) still the
rows it had when its status changed: the truth lists them as `deactivated_records`
(firehose.mjs) or only counts them as `records_before` (refpds), since a stream consumer
is not told to drop them. Rows or repos of DIDs the truth does not know are reported too.
Each mismatch is one human-readable line.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import psycopg
import pyarrow.dataset as ds
import pyarrow.parquet as pq

Row = tuple[str, str]
"""(collection/rkey, cid)."""
SHOWN = 5
"""Paths listed per mismatch; the rest are counted."""


class Inactive(StrEnum):
    """What rows a repo that is not ok may keep."""

    EITHER = "either"
    """None, or those it had at its status change."""
    NONE = "none"
    KEPT = "kept"
    """Exactly those it had at its status change."""


@dataclass
class RepoFound:
    """One DID as a sink holds it."""

    handle: str | None = None
    status: str | None = None
    records: set[Row] = field(default_factory=set)
    in_repos: bool = False
    """Whether the repos table has a row for it."""


def _add_records(found: dict[str, RepoFound], rows: Iterable[tuple[str, str, str, str]]) -> None:
    for did, collection, rkey, cid in rows:
        found.setdefault(did, RepoFound()).records.add((f"{collection}/{rkey}", cid))


def _add_repos(found: dict[str, RepoFound], rows: Iterable[tuple[str, str | None, str]]) -> None:
    for did, handle, status in rows:
        repo = found.setdefault(did, RepoFound())
        repo.handle, repo.status, repo.in_repos = handle, status, True


def _shown(rows: set[Row]) -> str:
    paths = sorted(f"{path} {cid}" for path, cid in rows)
    more = f" (+{len(paths) - SHOWN} more)" if len(paths) > SHOWN else ""
    return ", ".join(paths[:SHOWN]) + more


def _record_mismatches(did: str, want: set[Row], got: set[Row]) -> list[str]:
    out = []
    if missing := want - got:
        out.append(f"{did}: {len(missing)} missing rows: {_shown(missing)}")
    if extra := got - want:
        out.append(f"{did}: {len(extra)} extra rows: {_shown(extra)}")
    return out


def _inactive_mismatches(
    did: str, repo: Mapping[str, Any], got: set[Row], rule: Inactive
) -> list[str]:
    kept = repo.get("deactivated_records")
    before = repo.get("records_before")
    status = repo["status"]
    if rule is Inactive.NONE or (rule is Inactive.EITHER and not got):
        return _record_mismatches(did, set(), got) if got else []
    if kept is not None:
        return _record_mismatches(did, {(r["path"], r["cid"]) for r in kept}, got)
    if isinstance(before, int) and len(got) == before:
        return []
    return [f"{did}: {status} repo has {len(got)} rows, expected 0 or records_before={before}"]


def _repo_mismatches(
    did: str, repo: Mapping[str, Any], got: RepoFound | None, rule: Inactive
) -> list[str]:
    if got is None or not got.in_repos:
        out = [f"{did}: no row in repos (truth: {repo['status']}, {repo.get('handle')})"]
    else:
        out = []
        if got.handle != repo.get("handle"):
            out.append(f"{did}: handle {got.handle!r}, expected {repo.get('handle')!r}")
        if got.status != repo["status"]:
            out.append(f"{did}: status {got.status!r}, expected {repo['status']!r}")
    rows = got.records if got else set()
    if repo["status"] == "ok":
        want = {(r["path"], r["cid"]) for r in repo["records"]}
        return out + _record_mismatches(did, want, rows)
    return out + _inactive_mismatches(did, repo, rows, rule)


def compare_state(
    found: Mapping[str, RepoFound], truth: Mapping[str, Any], inactive: Inactive = Inactive.EITHER
) -> list[str]:
    """The mismatches between `found` ({did: what the sink holds}) and `truth`."""
    repos = truth["repos"]
    out: list[str] = []
    for did in sorted(repos):
        out += _repo_mismatches(did, repos[did], found.get(did), inactive)
    for did in sorted(set(found) - set(repos)):
        got = found[did]
        out.append(
            f"{did}: not in the truth, but {len(got.records)} rows, repos row {got.in_repos}"
        )
    return out


# -- sinks --------------------------------------------------------------------------------

RECORDS_QUERY = "SELECT did, collection, rkey, cid FROM records"
REPOS_QUERY = "SELECT did, handle, status FROM repos"


def load_sqlite(db_path: Path) -> dict[str, RepoFound]:
    found: dict[str, RepoFound] = {}
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
        _add_records(found, db.execute(RECORDS_QUERY))
        _add_repos(found, db.execute(REPOS_QUERY))
    return found


def compare_sqlite(
    db_path: Path, truth: Mapping[str, Any], inactive: Inactive = Inactive.EITHER
) -> list[str]:
    """Mismatches between the `records`/`repos` tables of a SQLite file and `truth`."""
    return compare_state(load_sqlite(db_path), truth, inactive)


def load_postgres(conninfo: str, schema: str | None = None) -> dict[str, RepoFound]:
    found: dict[str, RepoFound] = {}
    with psycopg.connect(conninfo) as conn:
        if schema:
            conn.execute("SELECT set_config('search_path', %s, false)", (schema,))
        _add_records(found, conn.execute(RECORDS_QUERY).fetchall())
        _add_repos(found, conn.execute(REPOS_QUERY).fetchall())
    return found


def wrong_record_counts(conninfo: str) -> int:
    """Repos whose `record_count` is not the number of their records (the stream sinks keep
    it by difference, batch after batch)."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT count(*) FROM repos WHERE record_count IS DISTINCT FROM"
            " (SELECT count(*) FROM records WHERE records.did = repos.did)"
        ).fetchone()
    assert row is not None
    return int(row[0])


def compare_postgres(
    conninfo: str,
    truth: Mapping[str, Any],
    schema: str | None = None,
    inactive: Inactive = Inactive.EITHER,
) -> list[str]:
    """Mismatches between the `records`/`repos` tables of a PostgreSQL database and `truth`."""
    return compare_state(load_postgres(conninfo, schema), truth, inactive)


def load_parquet(records: Path, repos: Path | None = None) -> dict[str, RepoFound]:
    """A records dataset (hive-partitioned or not; columns did, collection, rkey, cid)
    and a repos file (did, handle, status); without `repos`, `records/../repos.parquet`."""
    found: dict[str, RepoFound] = {}
    table = ds.dataset(records, format="parquet", partitioning="hive").to_table(
        columns=["did", "collection", "rkey", "cid"]
    )
    columns = [table.column(name).to_pylist() for name in ("did", "collection", "rkey", "cid")]
    _add_records(found, zip(*columns, strict=True))
    repos = repos or records.parent / "repos.parquet"
    if repos.exists():
        rows = pq.read_table(repos, columns=["did", "handle", "status"]).to_pylist()
        _add_repos(found, ((r["did"], r["handle"], r["status"]) for r in rows))
    return found


def compare_parquet(
    records: Path,
    truth: Mapping[str, Any],
    repos: Path | None = None,
    inactive: Inactive = Inactive.EITHER,
) -> list[str]:
    """Mismatches between a Parquet records dataset (+ repos.parquet) and `truth`."""
    return compare_state(load_parquet(records, repos), truth, inactive)


def compare_sink(
    sink: str, truth: Mapping[str, Any], inactive: Inactive = Inactive.EITHER
) -> list[str]:
    """By the `--sink` value: `sqlite:///path`, `postgresql://...`, or a directory holding
    `records/` (and `repos.parquet`)."""
    if sink.startswith("sqlite:///"):  # sqlite:///relative.db, sqlite:////absolute.db
        return compare_sqlite(Path(unquote(sink.removeprefix("sqlite:///"))), truth, inactive)
    if sink.startswith(("postgresql://", "postgres://")):
        return compare_postgres(sink, truth, inactive=inactive)
    return compare_parquet(Path(sink) / "records", truth, inactive=inactive)

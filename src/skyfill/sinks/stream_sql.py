"""What the SQL stream sinks share: the cursor table and the statements that apply
changes by rev (SQLite and PostgreSQL both speak this SQL: upserts with a WHERE on the
conflict's update, and `?`-less text the drivers fill with their own placeholders).

Rev rules (revs are TIDs: text order is time order):
- a put is upserted only over an older row;
- a delete removes the row only if the row is older than the delete;
- a reset removes the repo's rows at or below its rev, then puts its records;
- a repo update sets the status (and error, fetched_at) always, rev and commit_cid only
  when newer, handle and pds when given; `erase` deletes every record of the repo.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, LiteralString

from skyfill.sinks.changes import (
    ApplyCounts,
    ChangeBatch,
    RecordDelete,
    RecordPut,
    RepoReset,
    RepoUpdate,
)

CURSOR_TABLE = "firehose_cursor"
CURSOR_DDL: LiteralString = (
    "CREATE TABLE IF NOT EXISTS firehose_cursor ("
    " source TEXT PRIMARY KEY NOT NULL, cursor BIGINT NOT NULL, updated_at TEXT NOT NULL)"
)


def statements(p: LiteralString, json: LiteralString = "") -> dict[str, LiteralString]:
    """The apply statements with `p` as the driver's placeholder (`?` or `%s`); `json`
    casts the record's text where the column is jsonb (`::jsonb`)."""
    return {
        "put": (
            "INSERT INTO records (did, collection, rkey, uri, cid, rev, created_at, record, job_id)"
            f" VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p}{json}, {p})"
            " ON CONFLICT (did, collection, rkey) DO UPDATE SET uri = excluded.uri,"
            " cid = excluded.cid, rev = excluded.rev, created_at = excluded.created_at,"
            " record = excluded.record, job_id = excluded.job_id"
            " WHERE excluded.rev > records.rev"
        ),
        "delete": (
            f"DELETE FROM records WHERE did = {p} AND collection = {p} AND rkey = {p} AND rev < {p}"
        ),
        "reset": f"DELETE FROM records WHERE did = {p} AND rev <= {p}",
        "erase": f"DELETE FROM records WHERE did = {p}",
        "repo": (
            "INSERT INTO repos (did, handle, pds, status, rev, commit_cid, error, fetched_at)"
            f" VALUES ({p}, {p}, {p}, {p}, {p}, {p}, {p}, {p})"
            " ON CONFLICT (did) DO UPDATE SET status = excluded.status,"
            " handle = coalesce(excluded.handle, repos.handle),"
            " pds = coalesce(excluded.pds, repos.pds),"
            " rev = CASE WHEN excluded.rev IS NOT NULL AND (repos.rev IS NULL OR"
            " excluded.rev > repos.rev) THEN excluded.rev ELSE repos.rev END,"
            " commit_cid = CASE WHEN excluded.rev IS NOT NULL AND (repos.rev IS NULL OR"
            " excluded.rev > repos.rev) THEN excluded.commit_cid ELSE repos.commit_cid END,"
            " error = excluded.error, fetched_at = excluded.fetched_at"
        ),
        "count": (
            "UPDATE repos SET record_count = (SELECT count(*) FROM records"
            f" WHERE records.did = repos.did) WHERE did = {p}"
        ),
        "cursor": (
            f"INSERT INTO firehose_cursor (source, cursor, updated_at) VALUES ({p}, {p}, {p})"
            " ON CONFLICT (source) DO UPDATE SET cursor = excluded.cursor,"
            " updated_at = excluded.updated_at"
        ),
        "get_cursor": f"SELECT cursor FROM firehose_cursor WHERE source = {p}",
    }


def now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def uri(did: str, collection: str, rkey: str) -> str:
    return f"at://{did}/{collection}/{rkey}"


class ChangeWriter:
    """Applies a batch's changes through a DB-API cursor in an order that gives the same
    rows as theirs: puts and deletes gather in one executemany each, and a key's changes
    keep their order. The repos rows are upserted together at
    the end of the batch: they touch no record (an `erase` deletes the records in its
    place in the order), and a repo's updates within the batch fold into one row that
    the upsert turns into what they would have made one by one (`_fold`). `timestamp`
    turns a datetime into what the database takes (SQLite: ISO text; PostgreSQL: the
    datetime itself)."""

    def __init__(
        self,
        cursor: Any,
        sql: dict[str, LiteralString],
        stream_id: str,
        timestamp: Any,
        text: Any = None,
    ) -> None:
        self._text = text or (lambda value: value)
        self._cur = cursor
        self._sql = sql
        self._stream_id = stream_id
        self._timestamp = timestamp
        self._runs: dict[str, list[tuple]] = {"put": [], "delete": []}
        self._keys: dict[str, set[tuple[str, str, str]]] = {"put": set(), "delete": set()}
        self.touched: set[str] = set()
        self.counts = ApplyCounts()

    def apply(self, batch: ChangeBatch) -> ApplyCounts:
        now = self._timestamp(datetime.now(UTC))
        repos: dict[str, RepoUpdate] = {}
        for change in batch.changes:
            self.touched.add(change.did)
            if isinstance(change, RecordPut):
                self._queue("put", self._put_row(change))
            elif isinstance(change, RecordDelete):
                self._queue("delete", (change.did, change.collection, change.rkey, change.rev))
            elif isinstance(change, RepoReset):
                self._flush()
                self._reset(change)
            else:
                if change.erase:
                    self._flush()
                    self._erase(change.did)
                before = repos.get(change.did)
                repos[change.did] = change if before is None else _fold(before, change)
                self.counts.repos += 1
        self._flush()
        if repos:
            self._upsert_repos([_repo_row(r, now) for r in repos.values()])
        if self.touched:
            self._count_records(sorted(self.touched))
        self._cur.execute(self._sql["cursor"], (batch.source, batch.cursor, now_text()))
        return self.counts

    def _erase(self, did: str) -> None:
        self._cur.execute(self._sql["erase"], (did,))

    def _upsert_repos(self, rows: list[tuple]) -> None:
        self._cur.executemany(self._sql["repo"], rows)

    def _count_records(self, dids: list[str]) -> None:
        self._cur.executemany(self._sql["count"], [(did,) for did in dids])

    def _put_row(self, c: RecordPut) -> tuple:
        return (
            c.did,
            c.collection,
            c.rkey,
            uri(c.did, c.collection, c.rkey),
            c.cid,
            c.rev,
            self._timestamp(c.created_at),
            self._text(c.record),
            self._stream_id,
        )

    def _queue(self, kind: str, row: tuple) -> None:
        """Puts and deletes wait in a run each; a change of a key the other run holds
        sends that run first, so each key's changes keep their order."""
        key = (row[0], row[1], row[2])
        other = "delete" if kind == "put" else "put"
        if key in self._keys[other]:
            self._send(other)
        self._runs[kind].append(row)
        self._keys[kind].add(key)

    def _flush(self) -> None:
        self._send("delete")
        self._send("put")

    def _send(self, kind: str) -> None:
        rows = self._runs[kind]
        if not rows:
            return
        self._runs[kind], self._keys[kind] = [], set()
        changed = self._apply_run(kind, rows)
        if kind == "put":
            self.counts.upserted += changed
        else:
            self.counts.deleted += changed
        self.counts.skipped += len(rows) - changed

    def _apply_run(self, kind: str, rows: list[tuple]) -> int:
        """Apply a run of puts or deletes; the rows it changed."""
        self._cur.executemany(self._sql[kind], rows)
        return max(self._cur.rowcount, 0)  # executemany sums the rows each changed

    def _reset(self, change: RepoReset) -> None:
        self._cur.execute(self._sql["reset"], (change.did, change.rev))
        rows = [
            (
                change.did,
                r["collection"],
                r["rkey"],
                uri(change.did, r["collection"], r["rkey"]),
                r["cid"],
                r["rev"],
                self._timestamp(r["created_at"]),
                self._text(r["record"]),
                self._stream_id,
            )
            for r in change.records.to_pylist()
        ]
        if rows:
            self._cur.executemany(self._sql["put"], rows)
            changed = max(self._cur.rowcount, 0)  # rows newer than the reset stay as they are
            self.counts.upserted += changed
            self.counts.skipped += len(rows) - changed


def _repo_row(change: RepoUpdate, now: Any) -> tuple:
    return (
        change.did,
        change.handle,
        change.pds,
        change.status,
        change.rev,
        change.commit_cid,
        change.error,
        now,
    )


def _fold(first: RepoUpdate, then: RepoUpdate) -> RepoUpdate:
    """One update doing what `first` and then `then` do to a repos row: the later status
    and error; the later handle and pds, else the earlier; the newer rev (the first one
    when equal, as the upsert keeps a rev it already has) with its commit."""
    newer = then.rev is not None and (first.rev is None or then.rev > first.rev)
    return dataclasses.replace(
        then,
        handle=then.handle if then.handle is not None else first.handle,
        pds=then.pds if then.pds is not None else first.pds,
        rev=then.rev if newer else first.rev,
        commit_cid=then.commit_cid if newer else first.commit_cid,
        erase=first.erase or then.erase,
    )

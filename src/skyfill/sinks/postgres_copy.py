"""The PostgreSQL stream sink's writer: each run of changes through COPY and one statement.

`stream_sql.ChangeWriter` decides the order (runs of puts and of deletes, a key's changes
in order, the repos rows at the end); this writer sends a run of puts, a run of deletes
and the batch's repo rows each by COPY into a temporary table and applies it with one
statement, which costs the server and the client several times less than a statement per
row. The rules are `stream_sql`'s: a put is upserted only over an older row (of a run's
puts of one key, the newest; applied in order by rev they would leave the same), a delete
removes only an older row.

`record_count` follows the rows by difference: the upsert returns which rows it inserted
and the delete which it removed, and each repo's count moves by that much. A repo that a
reset or an erase touched, or whose count is not known yet, is counted again whole.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, LiteralString

from skyfill.sinks.changes import RepoReset
from skyfill.sinks.stream_sql import ChangeWriter

STAGES: tuple[LiteralString, ...] = (
    "CREATE TEMP TABLE IF NOT EXISTS stream_put (did text, collection text, rkey text,"
    " uri text, cid text, rev text, created_at timestamptz, record text, job_id text)"
    " ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stream_delete (did text, collection text, rkey text,"
    " rev text) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stream_repo (did text, handle text, pds text,"
    " status text, rev text, commit_cid text, error text, fetched_at timestamptz)"
    " ON COMMIT DELETE ROWS",
)
"""The temporary tables a connection stages its runs in (emptied after each run)."""

_PUT: LiteralString = (
    "WITH done AS ("
    "INSERT INTO records (did, collection, rkey, uri, cid, rev, created_at, record, job_id)"
    " SELECT DISTINCT ON (did, collection, rkey) did, collection, rkey, uri, cid, rev,"
    " created_at, record::jsonb, job_id FROM stream_put"
    " ORDER BY did, collection, rkey, rev DESC"
    " ON CONFLICT (did, collection, rkey) DO UPDATE SET uri = excluded.uri,"
    " cid = excluded.cid, rev = excluded.rev, created_at = excluded.created_at,"
    " record = excluded.record, job_id = excluded.job_id"
    " WHERE excluded.rev > records.rev"
    " RETURNING did, xmax = 0 AS inserted)"
    " SELECT did, count(*), count(*) FILTER (WHERE inserted) FROM done GROUP BY did"
)
_DELETE: LiteralString = (
    "WITH gone AS (DELETE FROM records r USING stream_delete d WHERE r.did = d.did"
    " AND r.collection = d.collection AND r.rkey = d.rkey AND r.rev < d.rev RETURNING r.did)"
    " SELECT did, count(*), -count(*) FROM gone GROUP BY did"
)
_COPY: dict[str, LiteralString] = {
    "put": "COPY stream_put FROM STDIN",
    "delete": "COPY stream_delete FROM STDIN",
    "repo": "COPY stream_repo FROM STDIN",
}
_TRUNCATE: dict[str, LiteralString] = {
    "put": "TRUNCATE stream_put",
    "delete": "TRUNCATE stream_delete",
    "repo": "TRUNCATE stream_repo",
}
_ADD_COUNTS: LiteralString = (
    "UPDATE repos SET record_count = repos.record_count + d.n"
    " FROM unnest(%s::text[], %s::bigint[]) AS d(did, n)"
    " WHERE repos.did = d.did AND repos.record_count IS NOT NULL"
)
_RECOUNT: LiteralString = (
    "UPDATE repos SET record_count = (SELECT count(*) FROM records"
    " WHERE records.did = repos.did)"
    " WHERE did = ANY(%s) AND (record_count IS NULL OR did = ANY(%s))"
)


def repo_upsert(upsert: LiteralString) -> LiteralString:
    """The repos upsert (`stream_sql.statements()["repo"]`) reading its rows from the stage."""
    columns, _, rest = upsert.partition(" VALUES ")
    _, _, conflict = rest.partition(" ON CONFLICT ")
    return columns + " SELECT * FROM stream_repo ON CONFLICT " + conflict


class CopyWriter(ChangeWriter):
    """`ChangeWriter` sending its runs through COPY, keeping `record_count` by difference."""

    def __init__(self, cursor: Any, sql: dict[str, LiteralString], *args: Any) -> None:
        super().__init__(cursor, sql, *args)
        self._repo_upsert = repo_upsert(sql["repo"])
        self._delta: Counter[str] = Counter()
        self._recount: set[str] = set()

    def _apply_run(self, kind: str, rows: list[tuple]) -> int:
        self._copy(kind, rows)
        changed = 0
        for did, rows_changed, delta in self._cur.execute(_PUT if kind == "put" else _DELETE):
            changed += rows_changed
            self._delta[did] += delta
        self._cur.execute(_TRUNCATE[kind])
        return changed

    def _copy(self, kind: str, rows: list[tuple]) -> None:
        with self._cur.copy(_COPY[kind]) as copy:
            for row in rows:
                copy.write_row(row)

    def _reset(self, change: RepoReset) -> None:
        super()._reset(change)
        self._recount.add(change.did)

    def _erase(self, did: str) -> None:
        super()._erase(did)
        self._recount.add(did)

    def _upsert_repos(self, rows: list[tuple]) -> None:
        self._copy("repo", rows)
        self._cur.execute(self._repo_upsert)
        self._cur.execute(_TRUNCATE["repo"])

    def _count_records(self, dids: list[str]) -> None:
        moved = [(did, n) for did, n in self._delta.items() if n and did not in self._recount]
        if moved:
            self._cur.execute(_ADD_COUNTS, ([did for did, _ in moved], [n for _, n in moved]))
        self._cur.execute(_RECOUNT, (dids, sorted(self._recount)))

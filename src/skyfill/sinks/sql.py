"""What the SQL sinks share: table columns, the refresh rules as SQL predicates, counts.

Both SQL sinks load a job the same way, in one transaction:
  1. the job's repos and records go into temporary staging tables (streamed);
  2. records are upserted (inserted, or updated where a value differs: a replay changes
     nothing);
  3. rows of the job's repos that the job says are gone are deleted: for an `ok` repo the
     rows (within the scope) that the job did not see, for a gone account all its rows
     (within the scope);
  4. repos rows are upserted; for `failed` / `invalid_repo` only the outcome columns.

The SQL text is typed `LiteralString`: it is made of this code's constants only (table and
column names, status lists, placeholders), every value goes as a parameter, and the type
checker holds psycopg's `execute` to that.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import LiteralString, cast

from skyfill.errors import Outcome
from skyfill.sinks.base import GONE_STATUSES, KEPT_STATUSES, LoadScope

RECORD_COLUMNS = (
    "did",
    "collection",
    "rkey",
    "uri",
    "cid",
    "rev",
    "created_at",
    "record",
    "job_id",
)
RECORD_KEY = ("did", "collection", "rkey")
RECORD_VALUES = ("uri", "cid", "rev", "created_at", "record")
"""Compared to decide whether a row changed (job_id is not: it names the job that last
changed the row, so a job that finds a record unchanged leaves it alone)."""
REPO_COLUMNS = (
    "did",
    "handle",
    "pds",
    "status",
    "rev",
    "commit_cid",
    "record_count",
    "car_bytes",
    "attempts",
    "error",
    "fetched_at",
)
REPO_OUTCOME = ("status", "attempts", "error", "fetched_at")
"""What a `failed` / `invalid_repo` outcome changes of an existing repos row (with handle
and pds when they were learnt)."""
REPO_LEARNT = ("handle", "pds")

STAGE_RECORDS = "skyfill_stage_records"
STAGE_REPOS = "skyfill_stage_repos"


def quoted_list(values: tuple[Outcome, ...]) -> LiteralString:
    """`('a', 'b')` as SQL literals (for the fixed status names only: Outcome's values are
    constants of this code, which the checker cannot see through the enum, hence the cast)."""
    return cast(LiteralString, ", ".join(f"'{v}'" for v in values))


GONE_SQL = quoted_list(GONE_STATUSES)
KEPT_SQL = quoted_list(KEPT_STATUSES)


def scope_predicate(
    scope: LoadScope,
    column: LiteralString,
    prefix_match: Callable[[LiteralString, LiteralString], LiteralString],
    param: LiteralString,
) -> tuple[LiteralString, list[str]]:
    """SQL that is true for rows of `column` inside the scope's collections, and its
    parameters. `prefix_match(column, param)` renders "column starts with a parameter"."""
    if scope.collections is None:
        return "TRUE", []
    terms: list[LiteralString] = []
    params: list[str] = []
    for nsid in scope.exact:
        terms.append(f"{column} = {param}")
        params.append(nsid)
    for prefix in scope.prefixes:
        terms.append(prefix_match(column, param))
        params.append(prefix)
    return "(" + " OR ".join(terms) + ")", params


def changed(
    table: LiteralString, columns: tuple[LiteralString, ...], excluded: LiteralString = "EXCLUDED"
) -> LiteralString:
    """`(t.a, t.b) IS DISTINCT FROM (EXCLUDED.a, EXCLUDED.b)` (PostgreSQL spelling)."""
    mine = ", ".join(f"{table}.{c}" for c in columns)
    theirs = ", ".join(f"{excluded}.{c}" for c in columns)
    return f"({mine}) IS DISTINCT FROM ({theirs})"


def load_counts(
    rows: int, inserted: int, updated: int, deleted: int | None = None
) -> dict[str, int]:
    counts = {"rows": rows, "inserted": inserted, "updated": updated}
    counts["unchanged"] = rows - inserted - updated
    if deleted is not None:
        counts["deleted"] = deleted
    return counts


class Stopwatch:
    """Seconds spent in each step of a load (recorded in the manifest: where time goes)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            elapsed = time.perf_counter() - started
            self.seconds[name] = round(self.seconds.get(name, 0.0) + elapsed, 3)

"""The sink seam: every destination of the final dataset implements `Sink`.

A sink gets the job's `records` (sorted by did, collection, rkey; one row per key) and
`repos` (one row per DID) as streams of Arrow batches and must never hold all of them in
memory. Parquet writes a fresh dataset per job; the SQL sinks (`sqlite`, `postgres`) merge
the job into long-lived tables, refreshing each repo the job covers (see `LoadScope` and
the status groups below, and docs/postgres.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from skyfill.errors import Outcome

REFRESHED_STATUSES = (Outcome.OK,)
"""The repo was fetched: its rows become exactly the job's rows (within the scope)."""
GONE_STATUSES = (
    Outcome.NOT_FOUND,
    Outcome.DELETED,
    Outcome.DEACTIVATED,
    Outcome.TAKENDOWN,
    Outcome.SUSPENDED,
)
"""The account serves no repo any more: its rows (within the scope) are deleted."""
KEPT_STATUSES = (Outcome.FAILED, Outcome.INVALID_REPO)
"""Nothing trustworthy was read: earlier rows stay, and so do the repo's rev, commit_cid,
record_count and car_bytes that describe them; only status, error, attempts, fetched_at
(and a newly learnt handle or pds) change."""


class Sink(Protocol):
    kind: str
    """`parquet`, `sqlite` or `postgresql`: recorded in the aggregation manifest."""
    target: str
    """Where it writes, for people (a path, or a URL without its password)."""

    def check(self) -> None:
        """Raise SinkUnavailable if the sink cannot be written (cheap: connects, writes
        nothing). Run before a job fetches anything."""
        ...

    def write(self, records: pa.RecordBatchReader, repos: pa.RecordBatchReader) -> dict[str, Any]:
        """Write the job's records and repos (both streamed) atomically: all or nothing.
        Writing the same input again changes nothing. Returns facts for the manifest."""
        ...


@dataclass(frozen=True, kw_only=True, slots=True)
class LoadScope:
    """Which rows of a repo a job speaks for: the only rows a SQL sink may delete."""

    collections: tuple[str, ...] | None = None
    """The job's collection patterns (`app.bsky.feed.post`, `app.bsky.graph.*`); None: all.
    Rows of other collections are never touched."""
    complete: bool = True
    """Whether the job saw every record of each fetched repo (in its collections). False
    under a time window (`--since`): then missing records are not deleted, only added or
    updated."""

    @property
    def exact(self) -> list[str]:
        return [p for p in self.collections or () if not p.endswith("*")]

    @property
    def prefixes(self) -> list[str]:
        return [p[:-1] for p in self.collections or () if p.endswith("*")]

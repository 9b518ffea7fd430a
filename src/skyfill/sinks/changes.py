"""The stream seam: what an event stream changes, and the sinks that apply it.

A firehose consumer turns events into `Change`s and hands them to a `StreamSink` in
batches. A batch is applied in one transaction together with the stream's cursor (the
seq it covers, per source), so a crash leaves the sink at a batch boundary. Every change
carries the repo rev it comes from and is applied only if it is newer than what the sink
holds for that key, so applying a batch twice (after a crash between the sink's commit
and the consumer's own cursor save) changes nothing. A sink knows rows and revs, not
AT Protocol: the consumer has verified and decoded everything before it gets here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

import pyarrow as pa


@dataclass(frozen=True, slots=True)
class RecordPut:
    """A record created or updated at `rev` (upserted unless the sink holds a newer rev)."""

    seq: int
    time: str
    did: str
    collection: str
    rkey: str
    cid: str
    rev: str
    record: str
    """The record as atproto JSON text (the output contract's `record`)."""
    created_at: datetime | None
    action: Literal["create", "update"] = "create"


@dataclass(frozen=True, slots=True)
class RecordDelete:
    """A record deleted at `rev` (removed unless the sink's row has a newer rev)."""

    seq: int
    time: str
    did: str
    collection: str
    rkey: str
    rev: str


@dataclass(frozen=True, slots=True)
class RepoReset:
    """A repo re-read whole (getRepo at `rev`, after a desync or a reactivation): every
    record of the repo at or below `rev` goes; `records` (RECORDS_SCHEMA columns without
    job_id: did, collection, rkey, uri, cid, rev, created_at, record) is its new content.
    Rows newer than `rev` (from events applied after the snapshot) stay."""

    seq: int
    time: str
    did: str
    rev: str
    commit_cid: str
    records: pa.Table


@dataclass(frozen=True, slots=True)
class RepoUpdate:
    """The repo's row: status always; rev and commit_cid when newer than the stored rev;
    handle and pds when not None. `erase` removes every record of the repo (the account is
    gone: deleted, deactivated, taken down, suspended), keeping the row."""

    seq: int
    time: str
    did: str
    status: str
    rev: str | None = None
    commit_cid: str | None = None
    handle: str | None = None
    pds: str | None = None
    error: str | None = None
    erase: bool = False


Change = RecordPut | RecordDelete | RepoReset | RepoUpdate


@dataclass(slots=True)
class ChangeBatch:
    source: str
    """The host (or relay) the events come from, as the cursor's key (`host:port`)."""
    cursor: int
    """The seq up to which (inclusive) the source's events are covered by this batch."""
    changes: Sequence[Change] = field(default_factory=list)
    """In seq order; several changes may share a seq (one commit's ops)."""


@dataclass(slots=True)
class ApplyCounts:
    upserted: int = 0
    deleted: int = 0
    skipped: int = 0
    """Changes not applied because the sink already held a newer (or the same) rev."""
    repos: int = 0


class StreamSink(Protocol):
    kind: str
    """`parquet`, `sqlite` or `postgresql`."""
    target: str
    """Where it writes, for people (a path, or a URL without its password)."""

    def check(self) -> None:
        """Raise SinkUnavailable if the sink cannot be written (cheap)."""
        ...

    def cursor(self, source: str) -> int | None:
        """The cursor last applied for `source`, or None."""
        ...

    def apply(self, batch: ChangeBatch) -> ApplyCounts:
        """Apply the batch and save its cursor, all or nothing. Idempotent."""
        ...

    def close(self) -> None: ...

    def facts(self) -> dict[str, Any]:
        """What the sink holds, for summaries (e.g. rows, parts)."""
        ...

"""Parquet stream sink: an append-only event log of what a stream changed.

`<dir>/events/date=YYYY-MM-DD/part-<first seq>-<last seq>.<written>.parquet`, one file per
batch (written to a temporary name, then renamed; `<file>.done` beside it once it is in
place). `<written>` is the time it was written, in nanoseconds: two batches may span the
same seqs (a re-fetched repo's rows carry the seq of the event before them), so both are
kept, and readers take the rows of one seq in the order their parts were written.
`<dir>/cursor.json` ({source: seq}) is written after the file. A crash between the two
makes the next run write an overlapping part again; readers (`compact`) drop the rows a
replay wrote twice. A shard K of a split stream (`skyfill firehose --shards`) writes its
own parts (`.shard-K` before `.parquet`) and its own `cursor.shard-K.json`: the shards
write at once, and each file has one writer. Columns:

- seq, idx (the change's position in its batch), time (the event's), did, op;
- op `create` / `update`: collection, rkey, cid, rev, record (atproto JSON), created_at;
- op `delete`: collection, rkey, rev;
- op `reset`: the repo was fetched whole at `rev` (`commit_cid`): its rows at or below
  `rev` go; the `create` rows that follow (same seq) are its records;
- op `repo`: status, and handle, pds, rev, commit_cid, error where known; `erase` true
  when the account is gone (its rows go).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.sinks.changes import (
    ApplyCounts,
    Change,
    ChangeBatch,
    RecordDelete,
    RecordPut,
    RepoReset,
    RepoUpdate,
)
from skyfill.sinks.schema import TIMESTAMP
from skyfill.storage.atomic import commit_file, tmp_path, write_bytes

EVENT_SCHEMA = pa.schema(
    [
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("idx", pa.int32(), nullable=False),
        pa.field("time", pa.string()),
        pa.field("did", pa.string(), nullable=False),
        pa.field("op", pa.string(), nullable=False),
        pa.field("collection", pa.string()),
        pa.field("rkey", pa.string()),
        pa.field("cid", pa.string()),
        pa.field("rev", pa.string()),
        pa.field("record", pa.string()),
        pa.field("created_at", TIMESTAMP),
        pa.field("status", pa.string()),
        pa.field("handle", pa.string()),
        pa.field("pds", pa.string()),
        pa.field("commit_cid", pa.string()),
        pa.field("error", pa.string()),
        pa.field("erase", pa.bool_()),
    ]
)


class _Columns:
    """The log's rows of one batch, gathered column by column (cheaper for Arrow than a
    dict per row)."""

    def __init__(self) -> None:
        self.columns: dict[str, list[Any]] = {name: [] for name in EVENT_SCHEMA.names}
        self.count = 0
        self.ops: dict[str, int] = {}

    def add(self, change: Any, op: str, **values: Any) -> None:
        columns = self.columns
        columns["seq"].append(change.seq)
        columns["idx"].append(self.count)
        columns["time"].append(change.time)
        columns["did"].append(change.did)
        columns["op"].append(op)
        for name in _VALUES:
            columns[name].append(values.get(name))
        self.count += 1
        self.ops[op] = self.ops.get(op, 0) + 1

    def table(self) -> pa.Table:
        return pa.table(self.columns, schema=EVENT_SCHEMA)


_VALUES = EVENT_SCHEMA.names[5:]
_OP = {RecordDelete: "delete", RepoUpdate: "repo"}
"""A change's `op` (a RecordPut's is its action)."""


def _rows(batch: ChangeBatch) -> _Columns:
    changes = batch.changes
    if any(type(c) is RepoReset for c in changes):
        return _rows_one_by_one(changes)
    return _rows_by_column(changes)


def _rows_by_column(changes: Sequence[Change]) -> _Columns:
    """One row per change, each column read off all the changes at once: a value column
    is the attribute of that name, None where the change has none (which is exactly what
    `_rows_one_by_one` gives each kind of change; a RepoReset, which spans several rows,
    goes there)."""
    rows = _Columns()
    columns = rows.columns
    columns["seq"] = [c.seq for c in changes]
    columns["idx"] = list(range(len(changes)))
    columns["time"] = [c.time for c in changes]
    columns["did"] = [c.did for c in changes]
    ops = [c.action if type(c) is RecordPut else _OP[type(c)] for c in changes]
    columns["op"] = ops
    for name in _VALUES:
        columns[name] = [getattr(c, name, None) for c in changes]
    rows.count = len(changes)
    rows.ops = dict(Counter(ops))
    return rows


def _rows_one_by_one(changes: Sequence[Change]) -> _Columns:
    rows = _Columns()
    add = rows.add
    for c in changes:
        if isinstance(c, RecordPut):
            add(c, c.action, collection=c.collection, rkey=c.rkey, cid=c.cid, rev=c.rev,
                record=c.record, created_at=c.created_at)  # fmt: skip
        elif isinstance(c, RecordDelete):
            add(c, "delete", collection=c.collection, rkey=c.rkey, rev=c.rev)
        elif isinstance(c, RepoReset):
            add(c, "reset", rev=c.rev, commit_cid=c.commit_cid)
            for r in c.records.to_pylist():
                add(c, "create", collection=r["collection"], rkey=r["rkey"], cid=r["cid"],
                    rev=r["rev"], record=r["record"], created_at=r["created_at"])  # fmt: skip
        elif isinstance(c, RepoUpdate):
            add(c, "repo", status=c.status, handle=c.handle, pds=c.pds, rev=c.rev,
                commit_cid=c.commit_cid, error=c.error, erase=c.erase)  # fmt: skip
    return rows


class EventLogSink:
    kind = "parquet"

    def __init__(self, root: Path, stream_id: str, shard: int | None = None) -> None:
        self.root = Path(root)
        self.target = str(self.root)
        self._stream_id = stream_id
        self._suffix = "" if shard is None else f".shard-{shard}"

    @property
    def _cursor_file(self) -> Path:
        return self.root / f"cursor{self._suffix}.json"

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def cursor(self, source: str) -> int | None:
        if not self._cursor_file.exists():
            return None
        value = orjson.loads(self._cursor_file.read_bytes()).get(source)
        return None if value is None else int(value)

    def apply(self, batch: ChangeBatch) -> ApplyCounts:
        rows = _rows(batch)
        if rows.count:
            first = min(rows.columns["seq"])
            day = _day(rows.columns["time"][0])
            path = (
                self.root
                / "events"
                / f"date={day}"
                / f"part-{first:012d}-{batch.cursor:012d}.{time.time_ns()}{self._suffix}.parquet"
            )
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = tmp_path(path)
            table = rows.table().replace_schema_metadata(
                {"stream_id": self._stream_id, "source": batch.source}
            )
            pq.write_table(table, tmp, compression="zstd")
            commit_file(tmp, path)
            write_bytes(path.with_name(path.name + ".done"), b"")
        cursors = {}
        if self._cursor_file.exists():
            cursors = orjson.loads(self._cursor_file.read_bytes())
        cursors[batch.source] = batch.cursor
        write_bytes(self._cursor_file, orjson.dumps(cursors))
        ops = rows.ops
        puts = ops.get("create", 0) + ops.get("update", 0)
        return ApplyCounts(upserted=puts, deleted=ops.get("delete", 0))

    def close(self) -> None:
        pass

    def facts(self) -> dict[str, Any]:
        return {"parts": len(done_parts(self.root))}


def done_parts(root: Path) -> list[Path]:
    """The log's part files that are complete (their `.done` marker is there), in the
    order they were written (by their names' write time; a part named before that was
    in the names, by its seqs, first)."""
    return sorted(
        (
            p
            for p in (root / "events").glob("date=*/part-*.parquet")
            if p.with_name(p.name + ".done").exists()
        ),
        key=_written,
    )


def _written(part: Path) -> tuple[int, str]:
    fields = part.name.split(".")
    written = fields[1] if len(fields) > 2 and fields[1].isdigit() else "0"
    return int(written), part.name


def _day(when: str | None) -> str:
    try:
        moment = datetime.fromisoformat((when or "").replace("Z", "+00:00"))
    except ValueError:
        moment = datetime.now(UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%d")

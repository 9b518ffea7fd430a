"""An event log (`event_log.py`), and optionally a backfill's output to start from, folded
into the current state: `records` and `repos` in the backfill's Parquet layout.

The fold follows the stream's rules (a put over an older row, a delete of an older row,
a reset dropping the repo's rows at or below its rev, a gone account's rows erased), in
order of seq, then of the parts as they were written, then of idx (the row's place in
its batch), with the rows a replayed batch wrote again dropped. A row is a replay's
copy when all of it but `idx` is the same: (seq, idx) alone is no identity, since a
re-fetched repo's rows carry the seq of the last event before them (in a later batch,
from idx 0), and a split stream's shards number their batches each on their own. It
holds the current rows in memory (about the size of the output dataset); a log of many
days folds in one pass.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.errors import UsageError
from skyfill.sinks.event_log import done_parts
from skyfill.sinks.parquet import ParquetSink
from skyfill.sinks.schema import RECORDS_SCHEMA, REPOS_SCHEMA

Key = tuple[str, str, str]


class _State:
    def __init__(self) -> None:
        self.records: dict[Key, dict[str, Any]] = {}
        self.by_did: dict[str, set[Key]] = defaultdict(set)
        self.repos: dict[str, dict[str, Any]] = {}

    def put(self, row: dict[str, Any]) -> None:
        key = (row["did"], row["collection"], row["rkey"])
        old = self.records.get(key)
        if old is None or old["rev"] < row["rev"]:
            self.records[key] = row
            self.by_did[key[0]].add(key)

    def delete(self, did: str, collection: str, rkey: str, rev: str) -> None:
        key = (did, collection, rkey)
        old = self.records.get(key)
        if old is not None and old["rev"] < rev:
            del self.records[key]
            self.by_did[did].discard(key)

    def drop(self, did: str, at_or_below: str | None = None) -> None:
        for key in list(self.by_did.get(did, ())):
            if at_or_below is None or self.records[key]["rev"] <= at_or_below:
                del self.records[key]
                self.by_did[did].discard(key)

    def repo(self, row: dict[str, Any]) -> None:
        repo = self.repos.setdefault(row["did"], {"did": row["did"]})
        repo["status"] = row["status"]
        repo["fetched_at"] = _moment(row["time"])
        repo["error"] = row["error"]
        for name in ("handle", "pds"):
            if row[name] is not None:
                repo[name] = row[name]
        if row["rev"] is not None and (repo.get("rev") is None or repo["rev"] < row["rev"]):
            repo["rev"], repo["commit_cid"] = row["rev"], row["commit_cid"]
        if row["erase"]:
            self.drop(row["did"])


def compact(log_dir: Path, out_dir: Path, snapshot: Path | None = None) -> dict[str, Any]:
    """Fold the log (and the snapshot) into `out_dir` (records/, repos.parquet)."""
    parts = done_parts(log_dir)
    if not parts and snapshot is None:
        raise UsageError(f"{log_dir}: no event log parts (events/date=*/part-*.parquet)")
    state = _State()
    if snapshot is not None:
        _load_snapshot(state, snapshot)
    events = _events(parts)
    for row in events:
        op = row["op"]
        if op in ("create", "update"):
            state.put(row)
        elif op == "delete":
            state.delete(row["did"], row["collection"], row["rkey"], row["rev"])
        elif op == "reset":
            state.drop(row["did"], row["rev"])
        elif op == "repo":
            state.repo(row)
    records, repos = _tables(state)
    ParquetSink(out_dir).write(
        pa.RecordBatchReader.from_batches(RECORDS_SCHEMA, records.to_batches()),
        pa.RecordBatchReader.from_batches(REPOS_SCHEMA, repos.to_batches()),
    )
    return {"parts": len(parts), "events": len(events), "records": records.num_rows,
            "repos": repos.num_rows}  # fmt: skip


def _events(parts: list[Path]) -> list[dict[str, Any]]:
    if not parts:
        return []
    table = pa.concat_tables(_part(p, written) for written, p in enumerate(parts))
    order = [("seq", "ascending"), ("written", "ascending"), ("idx", "ascending")]
    table = table.sort_by(order).drop_columns(["written"])
    seen: set[tuple[Any, ...]] = set()
    rows = []
    for row in table.to_pylist():
        mark = tuple(v for k, v in row.items() if k != "idx")
        if mark not in seen:  # a replayed batch wrote it twice
            seen.add(mark)
            rows.append(row)
    return rows


def _part(path: Path, written: int) -> pa.Table:
    """A part with its stream's id as `job_id` (the SQL sinks' job_id of streamed rows)
    and its place in the order of writing."""
    table = pq.read_table(path)
    stream_id = (table.schema.metadata or {}).get(b"stream_id", b"").decode() or None
    table = table.replace_schema_metadata(None)  # parts of other streams concatenate
    table = table.append_column("job_id", pa.array([stream_id] * table.num_rows, pa.string()))
    return table.append_column("written", pa.array([written] * table.num_rows, pa.int32()))


def _load_snapshot(state: _State, output: Path) -> None:
    records, repos = output / "records", output / "repos.parquet"
    if not records.is_dir() or not repos.is_file():
        raise UsageError(f"--snapshot {output}: not a job's output (records/, repos.parquet)")
    for row in pq.read_table(records, partitioning="hive").to_pylist():
        state.put({**row, "collection": str(row["collection"])})
    for row in pq.read_table(repos).to_pylist():
        state.repos[row["did"]] = {k: v for k, v in row.items() if k != "record_count"}
        if row.get("status") != "ok":
            state.drop(row["did"])


def _moment(when: str | None) -> datetime | None:
    """An event's time as the repos row's fetched_at (None when it does not parse)."""
    try:
        return datetime.fromisoformat((when or "").replace("Z", "+00:00")).astimezone(UTC)
    except ValueError:
        return None


def _tables(state: _State) -> tuple[pa.Table, pa.Table]:
    keys = sorted(state.records)
    rows = []
    for did, collection, rkey in keys:
        row = state.records[(did, collection, rkey)]
        rows.append({
            "did": did, "collection": collection, "rkey": rkey,
            "uri": f"at://{did}/{collection}/{rkey}", "cid": row["cid"], "rev": row["rev"],
            "created_at": row.get("created_at"), "record": row["record"],
            "job_id": row.get("job_id") or "compact",
        })  # fmt: skip
    counts: dict[str, int] = defaultdict(int)
    for did, _, _ in keys:
        counts[did] += 1
    repos = [
        {**{name: None for name in REPOS_SCHEMA.names}, **repo, "record_count": counts.get(did, 0)}
        for did, repo in sorted(state.repos.items())
    ]
    records = pa.Table.from_pylist(rows, schema=RECORDS_SCHEMA)
    return records, pa.Table.from_pylist(repos, schema=REPOS_SCHEMA)

"""The Kafka sinks' message format (one place for both the backfill and the stream).

Records topic (`TOPIC`): one message per record, keyed by its at-uri
(`at://DID/COLLECTION/RKEY`); the value is the records row as a JSON object
(`did, collection, rkey, uri, cid, rev, created_at, job_id` and `record`, the record
itself as a nested JSON object in atproto JSON); headers `did`, `rev`, `op` (`create`,
`update` or `delete`) and, from a stream, `seq`. A deleted record is a tombstone: its
key with no value.

Repos topic (`TOPIC.repos`): one message per DID and change, keyed by the DID; the value
is the repos row as a JSON object (`did, handle, pds, status, rev, commit_cid,
record_count, car_bytes, attempts, error, fetched_at`), headers `did`, `rev` (when the row
has one), `op` = `repo` (and `seq` from a stream).

Both are keyed for log compaction: the last message of a key is its current state.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import orjson
import pyarrow as pa

from skyfill.sinks.kafka_publisher import Message
from skyfill.sinks.schema import REPOS_SCHEMA

RECORD_FIELDS = ("did", "collection", "rkey", "uri", "cid", "rev", "created_at", "job_id")
REPO_FIELDS = tuple(REPOS_SCHEMA.names)
REPO_OP = "repo"


def record_uri(did: str, collection: str, rkey: str) -> str:
    return f"at://{did}/{collection}/{rkey}"


def headers(did: str, rev: str | None, op: str, seq: int | None = None) -> tuple:
    out = [("did", did.encode()), ("op", op.encode())]
    if rev:
        out.insert(1, ("rev", rev.encode()))
    if seq is not None:
        out.append(("seq", str(seq).encode()))
    return tuple(out)


def record_value(row: Mapping[str, Any], record: str) -> bytes:
    """The records row as JSON with `record` (atproto JSON text) nested as it is."""
    head = orjson.dumps({name: row[name] for name in RECORD_FIELDS})
    return b"".join((head[:-1], b',"record":', record.encode(), b"}"))


def record_message(
    topic: str, row: Mapping[str, Any], op: str = "create", seq: int | None = None
) -> Message:
    """A record put: `row` holds RECORD_FIELDS and `record`."""
    return Message(
        topic,
        row["uri"].encode(),
        record_value(row, row["record"]),
        headers(row["did"], row["rev"], op, seq),
    )


def tombstone(
    topic: str, did: str, collection: str, rkey: str, rev: str | None, seq: int | None = None
) -> Message:
    return Message(
        topic, record_uri(did, collection, rkey).encode(), None, headers(did, rev, "delete", seq)
    )


def repo_message(topic: str, row: Mapping[str, Any], seq: int | None = None) -> Message:
    """A repos row (REPO_FIELDS; datetimes as RFC 3339 text)."""
    value = orjson.dumps({name: row.get(name) for name in REPO_FIELDS})
    return Message(
        topic, row["did"].encode(), value, headers(row["did"], row.get("rev"), REPO_OP, seq)
    )


def batch_rows(batch: pa.RecordBatch) -> Iterator[dict[str, Any]]:
    """The rows of an Arrow batch as dicts (column by column: cheaper than to_pylist's
    dict per row for wide batches of dictionary columns)."""
    names = batch.schema.names
    columns = [batch.column(i).to_pylist() for i in range(batch.num_columns)]
    for values in zip(*columns, strict=True):
        yield dict(zip(names, values, strict=True))

"""The output contract's tables (DESIGN.md, 'Output contract') as Arrow schemas: what every
sink writes, whichever job type (a backfill, a stream's compaction) made the rows."""

from __future__ import annotations

import pyarrow as pa

from skyfill.storage.columnar import dictionary_field

TIMESTAMP = pa.timestamp("us", tz="UTC")

RECORDS_SCHEMA = pa.schema(
    [
        dictionary_field("did", pa.string(), nullable=False),
        dictionary_field("collection", pa.string(), nullable=False),
        pa.field("rkey", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("cid", pa.string(), nullable=False),
        dictionary_field("rev", pa.string(), nullable=False),
        pa.field("created_at", TIMESTAMP),
        pa.field("record", pa.string(), nullable=False),
        dictionary_field("job_id", pa.string(), nullable=False),
    ]
)

REPOS_SCHEMA = pa.schema(
    [
        pa.field("did", pa.string(), nullable=False),
        pa.field("handle", pa.string()),
        dictionary_field("pds", pa.string()),
        dictionary_field("status", pa.string(), nullable=False),
        pa.field("rev", pa.string()),
        pa.field("commit_cid", pa.string()),
        pa.field("record_count", pa.int64()),
        pa.field("car_bytes", pa.int64()),
        pa.field("attempts", pa.int32()),
        pa.field("error", pa.string()),
        pa.field("fetched_at", TIMESTAMP),
    ]
)

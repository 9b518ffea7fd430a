"""The backfill writes the output contract's tables: their schemas are the sinks'."""

from skyfill.sinks.schema import RECORDS_SCHEMA, REPOS_SCHEMA, TIMESTAMP

__all__ = [
    "NEWEST_COLUMN",
    "PARTITION_COLUMN",
    "RECORDS_SCHEMA",
    "RECORD_KEY",
    "REPOS_SCHEMA",
    "TIMESTAMP",
]

RECORD_KEY: tuple[str, ...] = ("did", "collection", "rkey")
"""A record's identity: of two rows with one key, the job keeps the newer."""
NEWEST_COLUMN = "rev"
"""What makes a row newer than another of the same key."""
PARTITION_COLUMN = "collection"
"""The Parquet output is partitioned by it, and rows are sorted by it first everywhere
(chunks, segments, task files, merges): each partition's rows come together."""

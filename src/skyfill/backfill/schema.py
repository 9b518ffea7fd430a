"""The backfill writes the output contract's tables: their schemas are the sinks'."""

from skyfill.sinks.schema import RECORDS_SCHEMA, REPOS_SCHEMA, TIMESTAMP

__all__ = ["RECORDS_SCHEMA", "REPOS_SCHEMA", "TIMESTAMP"]

"""`skyfill.open_dataset(...)`: a finished job's `records` or `repos` as a pyarrow dataset,
for DuckDB, polars, pandas or pyarrow itself."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.dataset as ds

from skyfill.api.summary import JobSummary
from skyfill.backfill.output import job_output, open_table
from skyfill.errors import UsageError


def open_dataset(
    job: str | os.PathLike[str] | JobSummary,
    workdir: str | os.PathLike[str] = "skyfill-work",
    table: str = "records",
) -> ds.Dataset:
    """The `records` (or, `table="repos"`, the `repos`) of a finished job written to
    Parquet: `job` is a job id in `workdir`, the job's directory, its output directory (or
    any directory with `records/` and `repos.parquet`, such as `skyfill firehose compact`'s),
    or what `skyfill.backfill` returned. Nothing is read until the dataset is scanned.

    `records` has the columns `did, collection, rkey, uri, cid, rev, created_at, record,
    job_id` (`record`: the record as JSON text); `repos` one row per DID with its `status`.
    Raises UsageError when there is no such job, it is unfinished, or it went to a
    database (SQLite, PostgreSQL: query that instead)."""
    if isinstance(job, JobSummary):
        if job.output is None:
            raise UsageError(f"job {job.job_id} wrote its dataset to {job.sink}, not to Parquet")
        return open_table(job.output, table)
    target = job if isinstance(job, str) else Path(os.fspath(job))
    return open_table(job_output(target, Path(os.fspath(workdir))), table)

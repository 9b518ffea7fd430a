"""What `skyfill.backfill(...)` returns: a finished job's numbers, as the CLI's summary
shows them, and where its dataset is."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow.dataset as ds

from skyfill.cli.summary import records_per_collection
from skyfill.engine.layout import JobLayout
from skyfill.engine.state.base import JobRecord, StateStore


@dataclass(frozen=True, slots=True)
class JobSummary:
    """A finished backfill job: `counts` are its DIDs per outcome (`ok`, `not_found`,
    `deactivated`, ..., the `repos.status` values), `records` the rows of its dataset
    (`records_by_collection` per collection). `output` is its Parquet directory
    (`records/`, `repos.parquet`), or None when `sink` is a database."""

    job_id: str
    status: str
    counts: dict[str, int]
    records: int
    records_by_collection: dict[str, int]
    sink: str
    output: Path | None
    path: Path
    """The job's directory, `<workdir>/jobs/<job_id>`."""
    config: dict = field(repr=False, default_factory=dict)
    """The job's stored config (BackfillConfig's fields; no password)."""

    @property
    def dids(self) -> int:
        return sum(self.counts.values())

    def dataset(self, table: str = "records") -> ds.Dataset:
        """The job's `records` (or `repos`) as a pyarrow dataset: `skyfill.open_dataset`."""
        from skyfill.api.datasets import open_dataset

        return open_dataset(self, table=table)

    def __str__(self) -> str:
        statuses = ", ".join(f"{k}={v}" for k, v in sorted(self.counts.items(), key=_by_count))
        where = self.output if self.output is not None else self.sink
        return (
            f"job {self.job_id}: {self.status}, {self.dids} DIDs ({statuses}), "
            f"{self.records} records -> {where}"
        )


def _by_count(item: tuple[str, int]) -> tuple[int, str]:
    return -item[1], item[0]


def summarize_job(layout: JobLayout, job: JobRecord, store: StateStore) -> JobSummary:
    """The summary of a completed job, from its aggregation manifest (and its store)."""
    manifest = orjson.loads((layout.aggregation / "manifest.json").read_bytes())
    sink = manifest.get("sink") or {"kind": "parquet"}
    by_collection = dict(records_per_collection(manifest).most_common())
    return JobSummary(
        job_id=job.job_id,
        status=str(job.status),
        counts=dict(manifest.get("repos_by_status") or store.status_counts()),
        records=sum(by_collection.values()),
        records_by_collection=by_collection,
        sink=str(job.config.get("sink", "parquet")),
        output=layout.output if sink.get("kind") == "parquet" else None,
        path=layout.root,
        config=dict(job.config),
    )

"""A finished job's Parquet dataset, read back: where it is (a job id in a workdir, a job's
directory, or an output directory itself) and its two tables as pyarrow datasets, `records`
(hive-partitioned by collection, the partition a column again) and `repos`.

`skyfill.open_dataset` and `skyfill query` both read a job's output through here; so can
the output of `skyfill firehose compact`, which has the same layout.
"""

from __future__ import annotations

from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.dataset as ds

from skyfill.engine.layout import JobLayout
from skyfill.errors import UsageError
from skyfill.sinks.schema import RECORDS_SCHEMA

TABLES = ("records", "repos")
PARTITION = "collection"


def job_output(target: str | Path, workdir: str | Path = "skyfill-work") -> Path:
    """The output directory of `target`: a directory (a job's, or an output directory
    with `records/` and `repos.parquet`), else a job id in `workdir`. Raises UsageError
    when there is no such job, its dataset is not finished, or it went to a database."""
    path = Path(target)
    if path.is_dir():
        if is_output_dir(path):
            return path
        if (path / "manifest.json").exists() and path.parent.name == "jobs":
            return _finished_output(JobLayout(path.parent.parent, path.name))
        raise UsageError(
            f"{path}: neither a job's directory (<workdir>/jobs/<job_id>) nor a dataset "
            "(records/, repos.parquet)"
        )
    text = str(target)
    if "/" in text or not text:
        raise UsageError(f"no directory {text!r}")
    layout = JobLayout(Path(workdir).resolve(), text)
    if not layout.root.is_dir():
        raise UsageError(f"no job {text} in {layout.workdir}")
    return _finished_output(layout)


def is_output_dir(path: Path) -> bool:
    return (path / "records").is_dir() and (path / "repos.parquet").is_file()


def _finished_output(layout: JobLayout) -> Path:
    job_id = layout.job_id
    aggregation = layout.aggregation / "manifest.json"
    if not aggregation.exists():
        raise UsageError(
            f"job {job_id} has no dataset yet (status {_status(layout)}): "
            f"`skyfill resume {job_id}` finishes it"
        )
    sink = orjson.loads(aggregation.read_bytes()).get("sink") or {"kind": "parquet"}
    if sink.get("kind") != "parquet":
        raise UsageError(
            f"job {job_id} wrote its dataset to {sink.get('kind')} {sink.get('target')}, "
            "not to Parquet: query that database (tables records and repos)"
        )
    if not is_output_dir(layout.output):
        raise UsageError(f"job {job_id}: its output directory {layout.output} is missing")
    return layout.output


def _status(layout: JobLayout) -> str:
    try:
        return str(orjson.loads(layout.manifest.read_bytes()).get("status", "unknown"))
    except (OSError, orjson.JSONDecodeError):
        return "unknown"


def open_table(output: Path, table: str = "records") -> ds.Dataset:
    """`records` or `repos` of an output directory as a pyarrow dataset (nothing is read
    until it is scanned). `records` has the contract's columns in their order, with
    `collection` taken from the partition directories."""
    if table == "records":
        return ds.dataset(
            output / "records",
            schema=records_schema(),
            format="parquet",
            partitioning=ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive"),
        )
    if table == "repos":
        return ds.dataset(output / "repos.parquet", format="parquet")
    raise UsageError(f"table {table!r}: choose one of {', '.join(TABLES)}")


def records_schema() -> pa.Schema:
    """The records table as read: the contract's schema, the partition column a string."""
    index = RECORDS_SCHEMA.get_field_index(PARTITION)
    field = RECORDS_SCHEMA.field(index)
    return RECORDS_SCHEMA.set(index, pa.field(PARTITION, pa.string(), field.nullable))

"""A worker task's output: durable segments while it runs, one validated file at the end.

Segments are written atomically and committed together with the outcomes of the items
whose rows they hold. At the end the committed segments are merged into the task file,
which is reopened and checked, then hashed; only then is its `.done` marker written.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.storage import columnar, replica
from skyfill.storage.atomic import commit_file, sha256_file, tmp_path, validate_parquet, write_bytes
from skyfill.storage.merge import MergeSpec, merge_stream


@dataclass(frozen=True, slots=True)
class Segment:
    """A durable file of output rows written by a task (the state store commits it
    with the outcomes of the items whose rows it holds)."""

    task_id: str
    seq: int
    path: str
    rows: int


SEGMENT_ROW_GROUP = 8192
"""Rows per row group in segments: merging a task's segments holds one group per segment."""


@dataclass(frozen=True, slots=True)
class TaskOutput:
    path: Path
    rows: int
    sha256: str


def write_segment(directory: Path, task_id: str, seq: int, table: pa.Table) -> Segment:
    directory.mkdir(parents=True, exist_ok=True)
    # Unique per writer: a worker that lost its task to another (a long Redis outage) can
    # never overwrite a segment the new owner committed under the same seq.
    path = directory / f"seg-{seq:05d}-{secrets.token_hex(4)}.parquet"
    tmp = tmp_path(path)
    columnar.write_table(table, tmp, SEGMENT_ROW_GROUP, columnar.INTERMEDIATE)
    commit_file(tmp, path)
    return Segment(task_id=task_id, seq=seq, path=path.name, rows=table.num_rows)


def adopt_segment(directory: Path, task_id: str, seq: int, source: Path, rows: int) -> Segment:
    """Make `source` (a sorted, de-duplicated Parquet file in `directory`, written by the
    job type) segment `seq`: renamed, not rewritten."""
    path = directory / f"seg-{seq:05d}-{secrets.token_hex(4)}.parquet"
    commit_file(source, path)
    return Segment(task_id=task_id, seq=seq, path=path.name, rows=rows)


def discard_uncommitted(directory: Path, committed: list[Segment]) -> None:
    """Delete segment files that a crash left behind without committing them."""
    if not directory.is_dir():
        return
    keep = {s.path for s in committed}
    for entry in directory.iterdir():
        if entry.name not in keep:
            entry.unlink()


def merge_segments(
    directory: Path, segments: list[Segment], schema: pa.Schema, target: Path, spec: MergeSpec
) -> TaskOutput:
    """Merge committed (sorted) segments into `target`, validate it, return its facts.

    One segment already is what the merge would write (a segment is sorted and
    de-duplicated when committed): it becomes the task file as it is, linked, not rewritten."""
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_path(target)
    written = 0
    if len(segments) == 1 and _same_schema(directory / segments[0].path, schema):
        _link_or_copy(directory / segments[0].path, tmp)
        written = segments[0].rows
    else:
        written = merge_files([directory / s.path for s in segments], schema, tmp, spec)
    commit_file(tmp, target)
    rows = validate_parquet(target, written)
    return TaskOutput(path=target, rows=rows, sha256=sha256_file(target))


def merge_files(inputs: list[Path], schema: pa.Schema, target: Path, spec: MergeSpec) -> int:
    """Merge sorted Parquet files into `target` (one row group at a time from each); the
    rows written."""
    written = 0
    with columnar.writer(target, schema, columnar.INTERMEDIATE) as writer:
        for batch in merge_stream(inputs, spec, schema):
            if batch.num_rows:
                writer.write_batch(batch)
                written += batch.num_rows
    return written


def _same_schema(path: Path, schema: pa.Schema) -> bool:
    return pq.read_schema(path).remove_metadata().equals(schema.remove_metadata())


def _link_or_copy(source: Path, target: Path) -> None:
    """`target` holding `source`'s bytes: a hard link (same file system), else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def mark_done(done_marker: Path, sha256: str) -> None:
    write_bytes(done_marker, (sha256 + "\n").encode())


def fetch_committed(directory: Path, committed: list[Segment]) -> None:
    """Bring committed segments written by another worker (shared storage) here."""
    for segment in committed:
        if not replica.ensure_local(directory / segment.path):
            raise FileNotFoundError(f"committed segment {directory / segment.path} is missing")


def remove_segments(directory: Path) -> None:
    if directory.is_dir():
        shutil.rmtree(directory)
    replica.removed_tree(directory)


def is_done(done_marker: Path) -> bool:
    return replica.ensure_local(done_marker)

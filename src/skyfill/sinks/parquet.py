"""Parquet sink: `records/collection=<nsid>/part-*.parquet` (hive) and `repos.parquet`.

Everything is written into a temporary directory that replaces the output directory in
one rename, so a crash never leaves a half-written dataset where readers look.
"""

from __future__ import annotations

import functools
import hashlib
import shutil
import urllib.parse
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.failpoints import failpoint
from skyfill.storage import arrow_compute as pc
from skyfill.storage import columnar, replica
from skyfill.storage.atomic import fsync_dir, sha256_file
from skyfill.storage.prefetch import ahead


@dataclass(frozen=True, slots=True)
class RowGroupBudget:
    """How much of the dataset is held before it is written."""

    max_rows: int
    """Rows per row group at most."""
    max_bytes: int
    """Bytes buffered over all partitions; past it the largest buffer is written."""


WRITE_THREADS = 2
"""Threads that encode and compress the output's row groups."""
DEFAULT_BUDGET = RowGroupBudget(max_rows=128 * 1024, max_bytes=256 << 20)
LOW_MEMORY_BUDGET = RowGroupBudget(max_rows=16 * 1024, max_bytes=16 << 20)


class ParquetSink:
    kind = "parquet"
    target = "output"
    """The job's own output directory (relative to the job directory)."""

    def __init__(
        self, output_dir: Path, partition_by: str = "collection", low_memory: bool = False
    ) -> None:
        self._budget = LOW_MEMORY_BUDGET if low_memory else DEFAULT_BUDGET
        self._threads = 0 if low_memory else WRITE_THREADS
        self._output = output_dir
        self._partition_by = partition_by

    def check(self) -> None:
        """Nothing to probe: the output lives in the job directory."""

    def write(self, records: pa.RecordBatchReader, repos: pa.RecordBatchReader) -> dict[str, Any]:
        tmp = self._output.with_name(self._output.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "records").mkdir(parents=True)  # present even when there are no records
        with PartitionWriter(
            tmp / "records", records.schema, self._partition_by, self._budget, self._threads
        ) as partitions:
            # Each batch is split into its partitions in a thread, ahead of the buffering.
            for parts in ahead((list(_partitions(b, self._partition_by)) for b in records), 2):
                partitions.write_parts(parts)
        with columnar.writer(tmp / "repos.parquet", repos.schema) as writer:
            for batch in repos:
                writer.write_batch(batch)
        files = _describe(tmp)
        if self._output.exists():
            shutil.rmtree(self._output)
        failpoint("output_removed")
        tmp.rename(self._output)
        fsync_dir(self._output.parent)
        replica.published_tree(self._output)
        return {
            "sink": {"kind": self.kind, "target": self.target},
            "output_files": files,
            "output_hash": _combined_hash(files),
        }


def _describe(directory: Path) -> list[dict[str, Any]]:
    files = sorted(p for p in directory.rglob("*.parquet"))
    described = []
    for path in files:
        described.append(
            {
                "file": str(path.relative_to(directory)),
                "rows": pq.ParquetFile(path).metadata.num_rows,
                "sha256": sha256_file(path),
            }
        )
    return described


def _combined_hash(files: list[dict]) -> str:
    digest = hashlib.sha256()
    for f in sorted(files, key=lambda f: f["file"]):
        digest.update(f"{f['file']}:{f['sha256']}\n".encode())
    return digest.hexdigest()


@dataclass(slots=True)
class _Buffer:
    batches: list[pa.RecordBatch] = field(default_factory=list)
    rows: int = 0
    nbytes: int = 0


class PartitionWriter:
    """Hive-partitioned Parquet (`<column>=<value>/part-0.parquet`, the partition column
    left out of the files) with a bounded buffer: each partition's rows are held until a
    row group is full, and the largest buffer is written early when all of them together
    pass the byte budget. Arrow's own dataset writer queues far more than that.

    Row groups are encoded and compressed in `threads` background threads (Arrow does it
    without the GIL), one at a time per file, at most `threads` of them queued besides."""

    def __init__(
        self,
        root: Path,
        schema: pa.Schema,
        column: str,
        budget: RowGroupBudget,
        threads: int = WRITE_THREADS,
    ) -> None:
        self._root = root
        self._column = column
        self._file_schema = schema.remove(schema.get_field_index(column))
        self._budget = budget
        self._buffers: dict[str, _Buffer] = {}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._held = 0
        self._threads = threads
        self._pool = ThreadPoolExecutor(threads, "skyfill-parquet") if threads else None
        self._writing: dict[str, Future[None]] = {}
        """Each file's row group being written (a file's groups are written in order)."""
        self._queued: deque[Future[None]] = deque()

    def __enter__(self) -> PartitionWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if exc[0] is None:
                for value in list(self._buffers):
                    self._flush(value)
            for future in self._queued:
                exc_value = future.exception()
                if exc_value is not None and exc[0] is None:
                    raise exc_value
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True, cancel_futures=True)
            for writer in self._writers.values():
                writer.close()

    def write(self, batch: pa.RecordBatch) -> None:
        self.write_parts(_partitions(batch, self._column))

    def write_parts(self, parts: Iterable[tuple[str, pa.RecordBatch]]) -> None:
        """A batch already split by `_partitions`."""
        for value, part in parts:
            buffer = self._buffers.setdefault(value, _Buffer())
            buffer.batches.append(part)
            buffer.rows += part.num_rows
            buffer.nbytes += part.nbytes
            self._held += part.nbytes
            if buffer.rows >= self._budget.max_rows:
                self._flush(value)
        while self._held > self._budget.max_bytes:
            self._flush(max(self._buffers, key=lambda v: self._buffers[v].nbytes))

    def _flush(self, value: str) -> None:
        buffer = self._buffers.pop(value)
        self._held -= buffer.nbytes
        if not buffer.rows:
            return
        writer = self._writers.get(value)
        if writer is None:
            directory = self._root / f"{self._column}={_path_segment(value)}"
            directory.mkdir(parents=True, exist_ok=True)
            writer = self._writers[value] = columnar.writer(
                directory / "part-0.parquet", self._file_schema
            )
        table = pa.Table.from_batches(buffer.batches, self._file_schema)
        if self._pool is None:
            writer.write_table(table, row_group_size=self._budget.max_rows)
            return
        written: Future[None] = Future()
        previous = self._writing.get(value)
        self._writing[value] = written
        self._queued.append(written)
        start = functools.partial(self._write_after, writer, table, written)
        if previous is None:
            start(None)
        else:
            # Queued behind the file's previous group, not waiting in a thread for it: the
            # threads meanwhile write other files' groups.
            previous.add_done_callback(start)
        while len(self._queued) > self._threads * 2 or (self._queued and self._queued[0].done()):
            self._queued.popleft().result()  # (its error, if any, raised here)

    def _write_after(
        self,
        writer: pq.ParquetWriter,
        table: pa.Table,
        written: Future[None],
        previous: Future[None] | None,
    ) -> None:
        """Write `table` in a thread once the file's `previous` group is written; `written`
        gets the outcome (the previous group's error, without writing, if it failed)."""
        if previous is not None and previous.cancelled():
            written.cancel()  # (the writer is shutting down after an error)
            return
        failed = previous.exception() if previous is not None else None
        if failed is not None:
            written.set_exception(failed)
            return
        assert self._pool is not None
        try:
            task = self._pool.submit(
                writer.write_table, table, row_group_size=self._budget.max_rows
            )
        except RuntimeError as exc:  # (the pool shut down: the write was abandoned)
            written.set_exception(exc)
            return
        task.add_done_callback(functools.partial(_settle, written))


def _settle(future: Future[None], done: Future[None]) -> None:
    """`future` ends as `done` did."""
    if done.cancelled():
        future.cancel()
        return
    failed = done.exception()
    if failed is not None:
        future.set_exception(failed)
    else:
        future.set_result(None)


def _partitions(batch: pa.RecordBatch, column: str) -> Iterator[tuple[str, pa.RecordBatch]]:
    """The batch's rows by their value of `column` (without it), each part in the batch's
    order: one stable sort and slices, not a filter per value."""
    values = batch.column(column)
    if batch.num_rows and pc.count_distinct(values).as_py() == 1 and not values.null_count:
        yield values[0].as_py(), batch.drop_columns([column])  # (rows grouped already)
        return
    order = pc.sort_indices(values)
    ordered = batch.take(order).drop_columns([column])
    start = 0
    for entry in pc.value_counts(pc.take(values, order)).to_pylist():
        count = entry["counts"]
        yield entry["values"], ordered.slice(start, count)
        start += count


def _path_segment(value: str) -> str:
    """`value` as one directory name that hive readers decode back (URI encoding)."""
    quoted = urllib.parse.quote(value, safe="")
    return quoted.replace(".", "%2E") if quoted in ("", ".", "..") else quoted

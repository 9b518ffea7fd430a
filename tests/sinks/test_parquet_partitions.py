"""The Parquet sink's partitioned writer: bounded buffers, same rows out as in."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from skyfill.sinks.parquet import PartitionWriter, RowGroupBudget
from skyfill.storage import columnar

SCHEMA = pa.schema([("collection", pa.string()), ("rkey", pa.string()), ("body", pa.string())])


def _batches(n_batches: int, rows: int) -> list[pa.RecordBatch]:
    collections = ["app.bsky.feed.post", "app.bsky.feed.like", "..", "a/b"]
    out = []
    for b in range(n_batches):
        keys = [f"{b:03d}-{i:04d}" for i in range(rows)]
        out.append(
            pa.record_batch(
                [
                    [collections[i % len(collections)] for i in range(rows)],
                    keys,
                    ["x" * 200 + k for k in keys],
                ],
                schema=SCHEMA,
            )
        )
    return out


def test_rows_come_back_per_partition_with_a_tiny_budget(tmp_path: Path) -> None:
    batches = _batches(20, 500)
    budget = RowGroupBudget(max_rows=700, max_bytes=64 * 1024)
    with PartitionWriter(tmp_path, SCHEMA, "collection", budget) as writer:
        for batch in batches:
            writer.write(batch)
    expected = pa.Table.from_batches(batches).sort_by(
        [("collection", "ascending"), ("rkey", "ascending")]
    )
    got = ds.dataset(tmp_path, format="parquet", partitioning="hive").to_table()
    got = got.select(SCHEMA.names).sort_by([("collection", "ascending"), ("rkey", "ascending")])
    assert got.to_pylist() == expected.to_pylist()
    # one directory per value, even for values that are not safe path segments
    dirs = sorted(p.name for p in tmp_path.iterdir())
    assert dirs == [
        "collection=%2E%2E",
        "collection=a%2Fb",
        "collection=app.bsky.feed.like",
        "collection=app.bsky.feed.post",
    ]
    # the byte budget forced early, small row groups; none above max_rows
    meta = pq.ParquetFile(tmp_path / "collection=app.bsky.feed.post" / "part-0.parquet").metadata
    sizes = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
    assert meta.num_row_groups > 1 and max(sizes) <= 700 // 2  # not row-limited
    assert "collection" not in meta.schema.names


def test_each_files_row_groups_stay_in_the_order_written(tmp_path: Path) -> None:
    """Groups of one file wait for each other while the threads write other files' groups:
    every file still holds its rows in the order they came."""
    batches = _batches(40, 500)
    budget = RowGroupBudget(max_rows=300, max_bytes=64 << 20)
    with PartitionWriter(tmp_path, SCHEMA, "collection", budget, threads=2) as writer:
        for batch in batches:
            writer.write(batch)
    came = pa.Table.from_batches(batches).to_pylist()
    for directory in sorted(tmp_path.iterdir()):
        file = pq.ParquetFile(directory / "part-0.parquet")
        assert file.metadata.num_row_groups > 10
        value = file.read().column("rkey").to_pylist()
        collection = urllib.parse.unquote(directory.name.removeprefix("collection="))
        assert value == [row["rkey"] for row in came if row["collection"] == collection]


def test_a_row_group_that_fails_fails_the_write_and_the_groups_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A disk that fails under one row group (a failing writer stands in for it): the error
    comes out of the writer, and the file's later groups, chained behind it, end too."""
    real = columnar.writer

    class Failing:
        def __init__(self, inner: pq.ParquetWriter) -> None:
            self.inner, self.calls = inner, 0

        def write_table(self, table: pa.Table, row_group_size: int) -> None:
            self.calls += 1
            if self.calls == 2:
                raise OSError("no space left on device")
            self.inner.write_table(table, row_group_size=row_group_size)

        def close(self) -> None:
            self.inner.close()

    monkeypatch.setattr(columnar, "writer", lambda *a, **k: Failing(real(*a, **k)))
    budget = RowGroupBudget(max_rows=300, max_bytes=64 << 20)
    with (
        pytest.raises(OSError, match="no space left"),
        PartitionWriter(tmp_path, SCHEMA, "collection", budget, threads=2) as writer,
    ):
        for batch in _batches(40, 500):
            writer.write(batch)

"""Parquet sink: `records/collection=<nsid>/part-*.parquet` (hive) and `repos.parquet`.

Everything is written into a temporary directory that replaces the output directory in
one rename, so a crash never leaves a half-written dataset where readers look.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from skyfill.engine.atomic import fsync_dir, sha256_file
from skyfill.engine.failpoints import failpoint


class ParquetSink:
    kind = "parquet"
    target = "output"
    """The job's own output directory (relative to the job directory)."""

    def __init__(
        self, output_dir: Path, partition_by: str = "collection", low_memory: bool = False
    ) -> None:
        self._low_memory = low_memory
        self._output = output_dir
        self._partition_by = partition_by

    def check(self) -> None:
        """Nothing to probe: the output lives in the job directory."""

    def write(self, records: pa.RecordBatchReader, repos: pa.RecordBatchReader) -> dict[str, Any]:
        tmp = self._output.with_name(self._output.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        (tmp / "records").mkdir(parents=True)  # present even when there are no records
        ds.write_dataset(
            records,
            tmp / "records",
            format="parquet",
            partitioning=ds.partitioning(
                pa.schema([records.schema.field(self._partition_by)]), flavor="hive"
            ),
            basename_template="part-{i}.parquet",
            existing_data_behavior="overwrite_or_ignore",
            file_options=ds.ParquetFileFormat().make_write_options(compression="zstd"),
            max_rows_per_group=16 * 1024 if self._low_memory else 128 * 1024,
            min_rows_per_group=2 * 1024 if self._low_memory else 16 * 1024,
        )
        with pq.ParquetWriter(tmp / "repos.parquet", repos.schema, compression="zstd") as writer:
            for batch in repos:
                writer.write_batch(batch)
        files = _describe(tmp)
        if self._output.exists():
            shutil.rmtree(self._output)
        failpoint("output_removed")
        tmp.rename(self._output)
        fsync_dir(self._output.parent)
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

"""Incremental refresh: what the previous job knew, and the rows it carries over.

A refresh job (`skyfill refresh JOB_ID`, or `skyfill run --previous JOB_ID`) asks each
repo's PDS for its latest commit (`getLatestCommit`) before fetching it. A repo whose rev
equals the rev the previous job stored has not changed: it is recorded `ok` with the
previous facts and `unchanged`, and not fetched. Its rows are carried over from the
previous job's aggregation inputs (sorted task files), filtered to the unchanged DIDs, as
more inputs of this job's aggregation; so records deleted from changed repos never come
back, and every sink sees the whole up-to-date dataset. A repo that was `ok` and now ends
`failed` or `invalid_repo` (nothing trustworthy was read, e.g. its new commit is badly
signed) keeps its previous rows the same way, with the error recorded.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.engine.model import ItemResult
from skyfill.errors import Outcome, UsageError
from skyfill.storage import arrow_compute as pc
from skyfill.storage import columnar
from skyfill.storage.atomic import commit_file, tmp_path


class PreviousJob:
    """The finished job a refresh follows (its directory; read only)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        state = root / "state.sqlite"
        if not state.exists() or not (root / "aggregation" / "manifest.json").exists():
            raise UsageError(f"--previous {root.name}: no finished job at {root}")
        self._db = sqlite3.connect(f"file:{state}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self._db.close()

    def dids(self) -> list[str]:
        return [key for (key,) in self._db.execute("SELECT key FROM items ORDER BY key")]

    def ok_repo(self, did: str) -> dict[str, Any] | None:
        """The facts the previous job stored for `did` if it ended `ok` with a rev."""
        row = self._db.execute("SELECT status, data FROM items WHERE key = ?", (did,)).fetchone()
        if row is None or row[0] != Outcome.OK or not row[1]:
            return None
        data = orjson.loads(row[1])
        return data if data.get("rev") else None

    def aggregation_inputs(self) -> list[Path]:
        """The sorted files the previous job's final dataset was merged from."""
        manifest = orjson.loads((self.root / "aggregation" / "manifest.json").read_bytes())
        names = [*manifest["input_files"], *manifest.get("carried_files", {})]
        return [self.root / name for name in names]


def carried_dids(items: Iterator[ItemResult]) -> pa.Array:
    """The DIDs whose previous rows stand: unchanged repos, and repos this job could not
    read anything trustworthy of (`kept_previous`: failed, or invalid, e.g. badly signed)."""
    return pa.array(
        sorted(i.key for i in items if i.data.get("unchanged") or i.data.get("kept_previous")),
        pa.string(),
    )


def carry_over(
    previous: PreviousJob, unchanged: pa.Array, directory: Path, schema: pa.Schema
) -> list[tuple[Path, int]]:
    """The previous job's rows of the `unchanged` DIDs, one sorted file per previous input
    (a filter keeps each file's order); only files with rows are returned."""
    directory.mkdir(parents=True, exist_ok=True)
    carried = []
    for index, source in enumerate(previous.aggregation_inputs()):
        target = directory / f"carried-{index:05d}.parquet"
        rows = _filter_file(source, target, unchanged, schema)
        if rows:
            carried.append((target, rows))
        else:
            target.unlink(missing_ok=True)
    return carried


def _filter_file(source: Path, target: Path, keep: pa.Array, schema: pa.Schema) -> int:
    file = pq.ParquetFile(source)
    tmp = tmp_path(target)
    rows = 0
    with columnar.writer(tmp, schema, columnar.INTERMEDIATE) as writer:
        for group in range(file.metadata.num_row_groups):
            table = file.read_row_group(group, columns=schema.names)
            kept = table.filter(pc.is_in(table.column("did"), value_set=keep))
            if kept.num_rows:
                writer.write_table(kept.cast(schema))
                rows += kept.num_rows
    commit_file(tmp, target)
    return rows

"""A repo too big to hold in memory: its CAR in a file, its records in bounded batches.

`fetcher.py` has `XrpcClient.get_repo` write a CAR over `--stream-repo-bytes` to a file in
the task's scratch directory as it arrives. `decode_file` maps that file, lets the C
decoder check the commit, the MST and every record block (`fastrepo.open_records`), then
turns `STREAM_BATCH_ROWS` records at a time into a table, sorts it and writes it as a
Parquet file; the files are merged (`spool.merge_files`) into the one file that the engine
commits as the item's segment (`SpilledRows`). Memory: the C index of the repo (~190 bytes
per block), one batch and the merge's read buffers; the mapped CAR's pages are dropped
from this process after each step (they stay in the page cache).

When the C decoder declines the repo (at the start or at any batch), the Python decoder
decides, as for any repo: it reads the whole CAR into memory and decodes it record by
record, so a huge irregular repo still needs ~6x its size (the batches written so far are
deleted first).
"""

from __future__ import annotations

import contextlib
import mmap
import os
import secrets
from pathlib import Path

import pyarrow.parquet as pq

from skyfill.atproto.fastrepo import CheckedRepo, open_records
from skyfill.backfill.collections import collection_filter
from skyfill.backfill.decode import DecodedRepo, python_decode, table_of_chunks
from skyfill.backfill.schema import NEWEST_COLUMN, PARTITION_COLUMN, RECORD_KEY, RECORDS_SCHEMA
from skyfill.engine.model import SpilledRows
from skyfill.failpoints import failpoint
from skyfill.storage import arrow_compute as pc
from skyfill.storage import columnar, spool
from skyfill.storage.merge import MergeSpec, sort_table

STREAM_BATCH_ROWS = 65_536
"""Records decoded, sorted and written at a time (~30 MB of table for typical records).
`SKYFILL_STREAM_BATCH_ROWS` overrides it (tests: several batches of a small repo)."""
MERGE_BATCH_ROWS = 16_384
"""Rows per step of the merge of a repo's batch files."""
SPEC = MergeSpec(
    key_columns=RECORD_KEY,
    newest_column=NEWEST_COLUMN,
    group_by=PARTITION_COLUMN,
    batch_rows=MERGE_BATCH_ROWS,
)
"""The backfill's dedup key and order (`BackfillHandler` declares the same)."""


def batch_rows() -> int:
    return int(os.environ.get("SKYFILL_STREAM_BATCH_ROWS") or STREAM_BATCH_ROWS)


def decode_file(
    car_path: str,
    did: str,
    job_id: str,
    since: str | None,
    collections: list[str] | None,
    signing_key: str | None,
    scratch: str,
) -> DecodedRepo:
    """`decode_to_table` of the CAR in `car_path`, its rows (if any) written to a file in
    `scratch` (`DecodedRepo.spilled`) when the C decoder takes the repo. Paths are strings:
    this runs in a decode thread or process."""
    with open(car_path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        view = mmap.mmap(f.fileno(), size, access=mmap.ACCESS_READ) if size else None
    if view is None:
        return python_decode(b"", did, job_id, since, collections, signing_key)
    try:
        decoded = _decode_batches(view, did, job_id, since, collections, signing_key, scratch)
        if decoded is None:  # declined: the Python decoder decides
            car = view[:]
            _close(view)
            return python_decode(car, did, job_id, since, collections, signing_key)
        return decoded
    finally:
        _close(view)


def _decode_batches(
    view: mmap.mmap,
    did: str,
    job_id: str,
    since: str | None,
    collections: list[str] | None,
    signing_key: str | None,
    scratch: str,
) -> DecodedRepo | None:
    """The repo by the C decoder a batch at a time; None when it declines."""
    keep = collection_filter(collections)
    records = open_records(view, did, keep, signing_key)
    _drop_pages(view)
    if records is None:
        return None
    commit, total = records.commit, len(records)
    files: list[Path] = []
    try:
        counts = _write_batches(records, (did, commit.rev, job_id), since, view, files, scratch)
        del records  # its index holds the mapping
        if counts is None:
            return None
        spilled = _merged(files, Path(scratch))
    finally:
        for path in files:
            path.unlink(missing_ok=True)
    table = RECORDS_SCHEMA.empty_table()
    return DecodedRepo(commit.rev, commit.cid, total, table, counts, spilled)


def _write_batches(
    records: CheckedRepo,
    constants: tuple[str, str, str],
    since: str | None,
    view: mmap.mmap,
    files: list[Path],
    scratch: str,
) -> dict[str, int] | None:
    """Each batch of records sorted into a file (appended to `files`); the rows kept by
    collection, or None when the C decoder declines a record."""
    counts: dict[str, int] = dict(records.counts) if since is None else {}
    step = batch_rows()
    for start in range(0, len(records), step):
        chunks = records.chunks(start, min(start + step, len(records)))
        _drop_pages(view)
        if chunks is None:
            return None
        table = sort_table(table_of_chunks(chunks, constants, since), SPEC)
        del chunks
        if not table.num_rows:
            continue
        if since is not None:
            for entry in pc.value_counts(table["collection"]).to_pylist():
                counts[entry["values"]] = counts.get(entry["values"], 0) + entry["counts"]
        path = Path(scratch) / f"batch-{os.getpid()}-{secrets.token_hex(4)}.parquet"
        files.append(path)  # (before it exists: deleted whatever happens next)
        columnar.write_table(table, path, spool.SEGMENT_ROW_GROUP, columnar.INTERMEDIATE)
        failpoint("stream_batch_written")
    return counts


def _merged(files: list[Path], scratch: Path) -> SpilledRows | None:
    """The batch files merged into one (or the one, as it is); None when there are none."""
    if not files:
        return None
    target = scratch / f"spilled-{os.getpid()}-{secrets.token_hex(4)}.parquet"
    if len(files) == 1:
        os.replace(files[0], target)
        rows = pq.ParquetFile(target).metadata.num_rows
    else:
        try:
            rows = spool.merge_files(files, RECORDS_SCHEMA, target, SPEC)
        except BaseException:
            target.unlink(missing_ok=True)
            raise
    return SpilledRows(target, rows, len(files))


def _drop_pages(view: mmap.mmap) -> None:
    """Drop the mapped CAR's pages from this process (its RSS): read again, they come back
    from the page cache."""
    with contextlib.suppress(OSError, AttributeError, ValueError):
        view.madvise(mmap.MADV_DONTNEED)


def _close(view: mmap.mmap) -> None:
    """Unmap, unless something still holds the mapping (an index kept alive by a
    traceback): then it is unmapped when that goes."""
    with contextlib.suppress(BufferError):
        view.close()

"""CAR bytes -> the `records` rows of one repository. Runs in an executor process.

The C decoder's column buffers (`atproto/fastrepo.py`) become the table directly; a
repository it declines goes through the Python decoder, record by record."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from skyfill.atproto.fastrepo import Chunk, RecordColumns, decode_columns
from skyfill.atproto.repo import RepoRecords, decode_repo
from skyfill.backfill.collections import collection_filter
from skyfill.backfill.schema import RECORDS_SCHEMA, TIMESTAMP
from skyfill.backfill.window import keep_mask
from skyfill.engine.model import SpilledRows
from skyfill.storage import arrow_compute as pc


@dataclass(frozen=True, slots=True)
class DecodedRepo:
    rev: str
    commit_cid: str
    record_count: int
    table: pa.Table
    counts: dict[str, int] | None = None
    """The table's rows by collection, when the decoder counted them."""
    spilled: SpilledRows | None = None
    """The rows in a file instead (`table` is then empty): a repo decoded in batches."""

    def by_collection(self) -> dict[str, int]:
        """The table's rows by collection."""
        if self.counts is not None:
            return self.counts
        if not self.table.num_rows:
            return {}
        return {
            entry["values"]: entry["counts"]
            for entry in pc.value_counts(self.table["collection"]).to_pylist()
        }


def decode_to_table(
    car: bytes,
    did: str,
    job_id: str,
    since: str | None = None,
    collections: list[str] | None = None,
    signing_key: str | None = None,
) -> DecodedRepo:
    """Verify and decode a repo CAR into a table of the records schema.

    With `collections` (NSID patterns, see collections.py), only records of matching
    collections are decoded and kept, and `record_count` counts those: it describes the
    part of the repo that the job is about. With `since` (an ISO time), only records made
    at or after it are kept (see window.py); `record_count` does not depend on `since`.
    With `signing_key` (a did:key), the commit's signature is verified first.
    """
    keep = collection_filter(collections)
    fast = decode_columns(car, did, keep, signing_key)
    if fast is not None:
        return _table_of_columns(fast, did, job_id, since)
    return python_decode(car, did, job_id, since, collections, signing_key)


def python_decode(
    car: bytes,
    did: str,
    job_id: str,
    since: str | None = None,
    collections: list[str] | None = None,
    signing_key: str | None = None,
) -> DecodedRepo:
    """`decode_to_table` by the Python decoder alone (the definition; record by record)."""
    keep = collection_filter(collections)
    repo = decode_repo(car, expected_did=did, keep_collection=keep, signing_key=signing_key)
    total = len(repo)
    if since is not None:
        _apply_window(repo, datetime.fromisoformat(since))
    rev = repo.commit.rev
    prefix = f"at://{did}/"
    uris = [f"{prefix}{c}/{r}" for c, r in zip(repo.collections, repo.rkeys, strict=True)]
    table = _records_table(
        (did, rev, job_id),
        pa.array(repo.collections, pa.string()),
        pa.array(repo.rkeys, pa.string()),
        pa.array(uris, pa.string()),
        pa.array(repo.cids, pa.string()),
        pa.array(repo.created_at, TIMESTAMP),
        pa.array(repo.records, pa.string()),
    )
    return DecodedRepo(rev=rev, commit_cid=repo.commit.cid, record_count=total, table=table)


def _records_table(
    constants: tuple[str, str, str],
    collection: pa.Array | pa.ChunkedArray,
    rkey: pa.Array | pa.ChunkedArray,
    uri: pa.Array | pa.ChunkedArray,
    cid: pa.Array | pa.ChunkedArray,
    created_at: pa.Array | pa.ChunkedArray,
    record: pa.Array | pa.ChunkedArray,
) -> pa.Table:
    """The records schema's table of one repo: its columns, and the (did, rev, job_id) that
    every row shares."""
    did, rev, job_id = (pa.repeat(pa.scalar(v, pa.string()), len(rkey)) for v in constants)
    return pa.Table.from_arrays(
        [did, collection, rkey, uri, cid, rev, created_at, record, job_id], schema=RECORDS_SCHEMA
    )


def _apply_window(repo: RepoRecords, since: datetime) -> None:
    mask = keep_mask(repo.rkeys, repo.created_at, since)
    for name in ("collections", "rkeys", "cids", "records", "created_at"):
        column = getattr(repo, name)
        column[:] = [value for value, keep in zip(column, mask, strict=True) if keep]


def _table_of_columns(fast: RecordColumns, did: str, job_id: str, since: str | None) -> DecodedRepo:
    rev = fast.commit.rev
    table = table_of_chunks(fast.chunks, (did, rev, job_id), since)
    total = sum(chunk.length for chunk in fast.chunks)
    counts = fast.counts if since is None else None  # (the window drops rows)
    return DecodedRepo(rev, fast.commit.cid, total, table, counts)


def table_of_chunks(
    chunks: list[Chunk], constants: tuple[str, str, str], since: str | None
) -> pa.Table:
    """The records schema's table of the C decoder's chunks (records of one repo, whose
    (did, rev, job_id) are `constants`), those made before `since` left out."""
    columns = [_arrays(chunk) for chunk in chunks]
    collection, rkey, uri, cid, record, created = (
        pa.chunked_array([arrays[i] for arrays in columns], type=RECORDS_SCHEMA.field(name).type)
        for i, name in enumerate(("collection", "rkey", "uri", "cid", "record", "created_at"))
    )
    if since is not None:
        mask = keep_mask(rkey.to_pylist(), created.to_pylist(), datetime.fromisoformat(since))
        keep = pa.array(mask, pa.bool_())
        collection, rkey, uri, cid, record, created = (
            column.filter(keep) for column in (collection, rkey, uri, cid, record, created)
        )
    return _records_table(constants, collection, rkey, uri, cid, created, record)


def _arrays(chunk: Chunk) -> list[pa.Array]:
    n = chunk.length

    def string(buffers: tuple[bytes, bytes]) -> pa.Array:
        offsets, data = buffers
        return pa.Array.from_buffers(
            pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(data)]
        )

    created = pa.Array.from_buffers(
        TIMESTAMP,
        n,
        [
            pa.py_buffer(chunk.created_valid) if chunk.created_nulls else None,
            pa.py_buffer(chunk.created_us),
        ],
        null_count=chunk.created_nulls,
    )
    if chunk.created_other:
        mask = [False] * n
        for i in chunk.created_other:
            mask[i] = True
        replacements = pa.array(
            [chunk.created_other[i] for i in sorted(chunk.created_other)], TIMESTAMP
        )
        created = pc.replace_with_mask(created, pa.array(mask), replacements)
    return [
        string(chunk.collection),
        string(chunk.rkey),
        string(chunk.uri),
        string(chunk.cid),
        string(chunk.record),
        created,
    ]

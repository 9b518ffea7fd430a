"""CAR bytes -> the `records` rows of one repository. Runs in an executor process."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pyarrow as pa

from skyfill.atproto.repo import RepoRecords, decode_repo
from skyfill.backfill.collections import CollectionFilter
from skyfill.backfill.schema import RECORDS_SCHEMA, TIMESTAMP
from skyfill.backfill.window import keep_mask


@dataclass(frozen=True, slots=True)
class DecodedRepo:
    rev: str
    commit_cid: str
    record_count: int
    table: pa.Table


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
    keep = CollectionFilter.from_patterns(collections) if collections else None
    repo = decode_repo(car, expected_did=did, keep_collection=keep, signing_key=signing_key)
    total = len(repo)
    if since is not None:
        _apply_window(repo, datetime.fromisoformat(since))
    n = len(repo)
    rev = repo.commit.rev
    prefix = f"at://{did}/"
    uris = [f"{prefix}{c}/{r}" for c, r in zip(repo.collections, repo.rkeys, strict=True)]
    table = pa.Table.from_arrays(
        [
            pa.array([did] * n, pa.string()),
            pa.array(repo.collections, pa.string()),
            pa.array(repo.rkeys, pa.string()),
            pa.array(uris, pa.string()),
            pa.array(repo.cids, pa.string()),
            pa.array([rev] * n, pa.string()),
            pa.array(repo.created_at, TIMESTAMP),
            pa.array(repo.records, pa.string()),
            pa.array([job_id] * n, pa.string()),
        ],
        schema=RECORDS_SCHEMA,
    )
    return DecodedRepo(rev=rev, commit_cid=repo.commit.cid, record_count=total, table=table)


def _apply_window(repo: RepoRecords, since: datetime) -> None:
    mask = keep_mask(repo.rkeys, repo.created_at, since)
    for name in ("collections", "rkeys", "cids", "records", "created_at"):
        column = getattr(repo, name)
        column[:] = [value for value, keep in zip(column, mask, strict=True) if keep]

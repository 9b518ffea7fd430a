"""CAR bytes -> the `records` rows of one repository. Runs in an executor process."""

from __future__ import annotations

from dataclasses import dataclass

import pyarrow as pa

from skyfill.atproto.repo import decode_repo
from skyfill.backfill.schema import RECORDS_SCHEMA, TIMESTAMP


@dataclass(frozen=True, slots=True)
class DecodedRepo:
    rev: str
    commit_cid: str
    record_count: int
    table: pa.Table


def decode_to_table(car: bytes, did: str, job_id: str) -> DecodedRepo:
    """Verify and decode a repo CAR into a table of the records schema."""
    repo = decode_repo(car, expected_did=did)
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
    return DecodedRepo(rev=rev, commit_cid=repo.commit.cid, record_count=n, table=table)

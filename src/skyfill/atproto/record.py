"""Records: one record block as atproto JSON text, and its `createdAt` as a datetime.

`decode_record` is the one definition of how a record block becomes a row's `record`:
shared by the repo decoder's hot loop (`repo.py`) and the event stream's commits
(`stream/commit.py`). The datetime rule is `syntax.parse_datetime`.
"""

from __future__ import annotations

from datetime import datetime

import cbrrr
import orjson

from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.syntax import parse_datetime

MAX_RECORD_BYTES = 1 << 20


def decode_record(block: bytes, collection: str, rkey: str) -> tuple[str, datetime | None]:
    """The record's atproto JSON text and its `createdAt`, from its DAG-CBOR block.

    Raises InvalidRepo: `record_too_large` above MAX_RECORD_BYTES, `bad_record` when it
    is not atproto's DAG-CBOR (no floats) or not a map. The block's CID is the caller's
    to check; the collection and rkey only name the record in errors."""
    if len(block) > MAX_RECORD_BYTES:
        raise record_too_large(collection, rkey)
    try:
        value = cbrrr.decode_dag_cbor(block, atjson_mode=True)
        text = orjson.dumps(value)  # TypeError: nested deeper than 254, an integer below -2**63
    except Exception as exc:
        raise InvalidRepo(
            f"record {collection}/{rkey} is not valid DAG-CBOR: {exc}", RepoFault.BAD_RECORD
        ) from None
    if type(value) is not dict:
        raise InvalidRepo(f"record {collection}/{rkey} is not a map", RepoFault.BAD_RECORD)
    return text.decode(), created_at(value)


def record_too_large(collection: str, rkey: str) -> InvalidRepo:
    return InvalidRepo(
        f"record {collection}/{rkey} is larger than {MAX_RECORD_BYTES} bytes",
        RepoFault.RECORD_TOO_LARGE,
    )


def created_at(value: object) -> datetime | None:
    """The record's `createdAt`, when present and a valid atproto datetime (else None)."""
    if isinstance(value, dict):
        return parse_datetime(value.get("createdAt"))
    return None

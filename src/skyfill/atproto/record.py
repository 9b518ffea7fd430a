"""Records: DAG-CBOR -> atproto JSON text (`$link` and `$bytes` kept apart), and createdAt."""

from __future__ import annotations

from datetime import datetime

import cbrrr
import orjson

from skyfill.atproto.exceptions import InvalidRepo

MAX_DATETIME_LENGTH = 64


def record_to_json(block: bytes) -> tuple[str, object]:
    """Decode one record block to atproto JSON text; also return the decoded value.

    cbrrr's atjson mode turns CIDs into `{"$link": ...}` and byte strings into
    `{"$bytes": ...}` while decoding, which libipld cannot (it returns both as bytes).
    """
    try:
        value = cbrrr.decode_dag_cbor(block, atjson_mode=True)
    except Exception as exc:
        raise InvalidRepo(f"record is not valid DAG-CBOR: {exc}") from None
    return orjson.dumps(value).decode(), value


def parse_datetime(value: object) -> datetime | None:
    """An atproto datetime string as an aware datetime, or None if it is not a valid one."""
    if not isinstance(value, str) or len(value) > MAX_DATETIME_LENGTH or "T" not in value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed


def created_at(value: object) -> datetime | None:
    """The record's `createdAt`, when present and valid."""
    if isinstance(value, dict):
        return parse_datetime(value.get("createdAt"))
    return None

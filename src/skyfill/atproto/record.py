"""Records: their `createdAt` as a datetime, when it is a valid atproto datetime.

(Records are decoded to atproto JSON in `repo.py`'s hot loop, with cbrrr's atjson mode.)
"""

from __future__ import annotations

from datetime import datetime

MAX_DATETIME_LENGTH = 64


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

"""Records: their `createdAt` as a datetime, when it is a valid atproto datetime.

(Records are decoded to atproto JSON in `repo.py`'s hot loop, with cbrrr's atjson mode;
the datetime rule is `syntax.parse_datetime`.)
"""

from __future__ import annotations

from datetime import datetime

from skyfill.atproto.syntax import parse_datetime


def created_at(value: object) -> datetime | None:
    """The record's `createdAt`, when present and a valid atproto datetime (else None)."""
    if isinstance(value, dict):
        return parse_datetime(value.get("createdAt"))
    return None

"""The time window (`--since`): which records a job keeps, by rkey TID or createdAt."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from skyfill.atproto.tid import tid_timestamp
from skyfill.errors import UsageError

_RELATIVE = re.compile(r"^(\d+)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def resolve_since(text: str | None, now: datetime | None = None) -> str | None:
    """`7d`, `12h`, `2025-01-01`, an ISO timestamp, or `all` -> a pinned ISO time (or None).

    Relative windows are pinned when the job is planned, so a resumed job keeps the same
    window.
    """
    if text is None or text.strip().lower() in ("", "all"):
        return None
    value = text.strip()
    now = now or datetime.now(UTC)
    match = _RELATIVE.match(value.lower())
    if match:
        moment = now - timedelta(**{_UNITS[match[2]]: int(match[1])})
    else:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            raise UsageError(
                f"since: {text!r} is not a window (want 7d, 12h, 2025-01-01, an ISO time or all)"
            ) from None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat()


def record_times(rkeys: list[str], created: list[datetime | None]) -> list[datetime | None]:
    """When each record was made: its rkey's TID time, else its valid createdAt, else None."""
    return [tid_timestamp(rkey) or when for rkey, when in zip(rkeys, created, strict=True)]


def keep_mask(rkeys: list[str], created: list[datetime | None], since: datetime) -> list[bool]:
    return [t is not None and t >= since for t in record_times(rkeys, created)]

"""TIDs: atproto's sortable timestamp identifiers (record keys and repo revs)."""

from __future__ import annotations

import re
from datetime import UTC, datetime

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")


def encode_tid(micros: int, clock_id: int = 0) -> str:
    """TID string of a microsecond timestamp and a 10-bit clock id."""
    value = (micros << 10) | (clock_id & 0x3FF)
    chars = []
    for _ in range(13):
        chars.append(_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def is_tid(text: str) -> bool:
    return bool(_TID.match(text))


def tid_timestamp(text: str) -> datetime | None:
    """The time a TID encodes, or None if `text` is not a TID."""
    if not is_tid(text):
        return None
    value = 0
    for c in text:
        value = (value << 5) | _INDEX[c]
    micros = value >> 10
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)

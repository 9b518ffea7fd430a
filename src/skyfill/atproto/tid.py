"""TIDs: atproto's sortable timestamp identifiers (record keys and repo revs).

Their syntax is `syntax.is_valid_tid`; here, making one and reading its time."""

from __future__ import annotations

from datetime import UTC, datetime

from skyfill.atproto.syntax import is_valid_tid

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}


def encode_tid(micros: int, clock_id: int = 0) -> str:
    """TID string of a microsecond timestamp and a 10-bit clock id."""
    value = (micros << 10) | (clock_id & 0x3FF)
    chars = []
    for _ in range(13):
        chars.append(_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def tid_timestamp(text: str) -> datetime | None:
    """The time a TID encodes, or None if `text` is not a TID."""
    if not is_valid_tid(text):
        return None
    value = 0
    for c in text:
        value = (value << 5) | _INDEX[c]
    micros = value >> 10
    return datetime.fromtimestamp(micros / 1_000_000, tz=UTC)

"""TIDs: atproto's sortable timestamp identifiers (record keys and repo revs)."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime

_ALPHABET = "234567abcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(_ALPHABET)}
_TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
_lock = threading.Lock()
_last = 0


def encode_tid(micros: int, clock_id: int = 0) -> str:
    """TID string of a microsecond timestamp and a 10-bit clock id."""
    value = (micros << 10) | (clock_id & 0x3FF)
    chars = []
    for _ in range(13):
        chars.append(_ALPHABET[value & 0x1F])
        value >>= 5
    return "".join(reversed(chars))


def next_tid(clock_id: int = 0) -> str:
    """A new TID, strictly greater than every TID this process made before."""
    global _last
    with _lock:
        now = max(time.time_ns() // 1000, _last + 1)
        _last = now
    return encode_tid(now, clock_id)


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

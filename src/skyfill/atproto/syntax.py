"""Strict syntax of atproto identifiers: one definition of each rule, checked where they enter.

DIDs, handles, NSIDs, record keys, TIDs, AT URIs, datetimes and repo paths, as the atproto
specs define them (atproto.com/specs/did, /handle, /nsid, /record-key, /at-uri-scheme,
/lexicon#datetime, /repository). Every pattern is matched with `fullmatch` over ASCII
classes, so neither a trailing newline nor a non-ASCII digit slips through.

Each `validate_x(value)` returns `value` or raises: InvalidDid (a TerminalError, for the DID
that names an account) for DIDs, InvalidSyntax (a ValueError) for the rest; each
`is_valid_x(value)` is its boolean twin. Which DID methods skyfill can resolve is a policy
of `did.py`, not a syntax rule.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from functools import lru_cache

from skyfill.atproto.exceptions import InvalidDid


class InvalidSyntax(ValueError):
    """A string is not a valid identifier of the kind asked for (handle, NSID, record key,
    TID, AT URI, datetime, repo path)."""


MAX_DID_LENGTH = 2048
MAX_HANDLE_LENGTH = 253
MAX_NSID_LENGTH = 317
MAX_AT_URI_LENGTH = 8192
MAX_DATETIME_LENGTH = 64

# did:<method>:<identifier>; the method is lower-case letters; the identifier may contain
# `:` but not end with it, and a `%` always starts a percent-encoded byte.
_DID = re.compile(
    r"did:[a-z]+:(?:[a-zA-Z0-9._:-]|%[0-9a-fA-F]{2})*(?:[a-zA-Z0-9._-]|%[0-9a-fA-F]{2})"
)
# Domain names of two or more labels (1-63 characters, no hyphen at either end); the last
# label (the TLD) starts with a letter.
_HANDLE = re.compile(
    r"(?:[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+"
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
)
# A reversed domain (the first label starts with a letter) then a name: letters and digits,
# starting with a letter.
_NSID = re.compile(
    r"[a-zA-Z](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?"
    r"(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)+"
    r"\.[a-zA-Z][a-zA-Z0-9]{0,62}"
)
# What may stand before the trailing `*` of a collection glob (`app.bsky.`, `app.bsky.feed.p`).
_NSID_PREFIX = re.compile(r"[a-zA-Z][a-zA-Z0-9-]*(?:\.[a-zA-Z0-9][a-zA-Z0-9-]*)*\.?")
MAX_RECORD_KEY_LENGTH = 512
RECORD_KEY = re.compile(rf"(?!\.\.?\Z)[a-zA-Z0-9_~.:-]{{1,{MAX_RECORD_KEY_LENGTH}}}")
"""A record key: 1-512 of `A-Za-z0-9 _ ~ . : -`, and neither `.` nor `..`."""
TID = re.compile(r"[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}")
"""13 characters of base32-sortable; the first leaves the top bit of the 64 clear."""
# The Lexicon `cid` string format checks syntax only: 8-256 of `A-Za-z0-9+=` (a multibase
# string), and not a CIDv0 (`Qm…`). `cid.is_cid_str` is the strict check of a commit's CID.
_CID = re.compile(r"(?!Qm)[a-zA-Z0-9+=]{8,256}")
# Lexicon datetimes: RFC 3339 with ISO 8601's upper-case T and Z, seconds required,
# fractional seconds optional (one digit or more), and a time zone (Z or +hh:mm/-hh:mm).
# Field values (month 13, second 61) are checked when parsing. `-00:00` (RFC 3339's
# "offset unknown") is not allowed: UTC is `Z` or `+00:00`. Digits are written out, not
# `{n}`: the regex runs once per record, and this is faster.
_DATETIME = re.compile(
    r"[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]T[0-9][0-9]:[0-9][0-9]:[0-9][0-9](?:\.[0-9]+)?"
    r"(?:Z|\+[0-9][0-9]:[0-9][0-9]|-(?!00:00)[0-9][0-9]:[0-9][0-9])"
)


def validate_did(value: str) -> str:
    """`value` if it is DID syntax (any method), else raise InvalidDid."""
    if not is_valid_did(value):
        raise InvalidDid(f"not a valid DID: {value[:80]!r}")
    return value


def is_valid_did(value: str) -> bool:
    # Every firehose event names a DID, nearly always a did:plc: ASCII letters and digits
    # after `did:plc:` are a subset of the rule, checked by C string methods in a fifth of
    # the regex's time.
    if value.startswith("did:plc:") and value.isascii() and value[8:].isalnum():
        return len(value) <= MAX_DID_LENGTH
    return len(value) <= MAX_DID_LENGTH and _DID.fullmatch(value) is not None


def is_valid_at_identifier(value: str) -> bool:
    """Whether `value` is a DID or a handle (an AT URI's authority)."""
    return is_valid_did(value) or is_valid_handle(value)


def validate_handle(value: str) -> str:
    """`value` if it is handle syntax (case-insensitive; compare it lower-cased)."""
    if not is_valid_handle(value):
        raise InvalidSyntax(f"not a valid handle: {value[:80]!r}")
    return value


def is_valid_handle(value: str) -> bool:
    return len(value) <= MAX_HANDLE_LENGTH and _HANDLE.fullmatch(value) is not None


def validate_nsid(value: str) -> str:
    """`value` if it is an NSID (e.g. `app.bsky.feed.post`)."""
    if not is_valid_nsid(value):
        raise InvalidSyntax(f"not a valid NSID: {value[:80]!r}")
    return value


def is_valid_nsid(value: str) -> bool:
    return len(value) <= MAX_NSID_LENGTH and _NSID.fullmatch(value) is not None


def is_nsid_prefix(value: str) -> bool:
    """Whether `value` can begin an NSID (`app.bsky.`, `app.bsky.graph.`, `app.bsky.feed.p`)."""
    return len(value) < MAX_NSID_LENGTH and _NSID_PREFIX.fullmatch(value) is not None


def validate_record_key(value: str) -> str:
    """`value` if it is a record key."""
    if RECORD_KEY.fullmatch(value) is None:
        raise InvalidSyntax(f"not a valid record key: {value[:80]!r}")
    return value


def is_valid_record_key(value: str) -> bool:
    return RECORD_KEY.fullmatch(value) is not None


def validate_tid(value: str) -> str:
    """`value` if it is a TID (a record key or a repo rev)."""
    if TID.fullmatch(value) is None:
        raise InvalidSyntax(f"not a valid TID: {value[:80]!r}")
    return value


def is_valid_tid(value: str) -> bool:
    return TID.fullmatch(value) is not None


def validate_repo_path(value: str) -> str:
    """`value` if it is an MST key: `<collection NSID>/<record key>`, exactly one `/`."""
    if not is_valid_repo_path(value):
        raise InvalidSyntax(f"not a valid repo path (collection/rkey): {value[:80]!r}")
    return value


def is_valid_repo_path(value: str) -> bool:
    # Once per op of every commit event: collections are few, so their answers are cached
    # (a bounded cache: the values are untrusted); record keys of ASCII letters and digits
    # only (TIDs, `self`: a subset of the rule) skip the regex.
    collection, _, rkey = value.partition("/")
    return is_valid_collection(collection) and (
        (rkey.isalnum() and rkey.isascii() and len(rkey) <= MAX_RECORD_KEY_LENGTH)
        or RECORD_KEY.fullmatch(rkey) is not None
    )


is_valid_collection = lru_cache(maxsize=1024)(is_valid_nsid)
"""`is_valid_nsid` of a repo path's collection, its answers cached (a bounded cache: the
values are untrusted)."""


def validate_at_uri(value: str) -> str:
    """`value` if it is a restricted AT URI: `at://<DID or handle>[/<NSID>[/<record key>]]`,
    with no query, fragment or trailing slash (the Lexicon `at-uri` format)."""
    if not is_valid_at_uri(value):
        raise InvalidSyntax(f"not a valid AT URI: {value[:80]!r}")
    return value


def is_valid_at_uri(value: str) -> bool:
    if len(value) > MAX_AT_URI_LENGTH or not value.startswith("at://"):
        return False
    parts = value[5:].split("/")
    if len(parts) > 3:
        return False
    if not is_valid_at_identifier(parts[0]):
        return False
    if len(parts) > 1 and not is_valid_nsid(parts[1]):
        return False
    return len(parts) < 3 or RECORD_KEY.fullmatch(parts[2]) is not None


def is_valid_cid(value: str) -> bool:
    """Whether `value` has the syntax of the Lexicon `cid` string format."""
    return _CID.fullmatch(value) is not None


def validate_datetime(value: str) -> str:
    """`value` if it has the syntax of a Lexicon datetime (`1985-04-12T23:20:50.123Z`).

    Syntax only: `parse_datetime` also refuses impossible dates and times (month 13)."""
    if not is_valid_datetime(value):
        raise InvalidSyntax(f"not a valid datetime: {value[:80]!r}")
    return value


def is_valid_datetime(value: str) -> bool:
    return len(value) <= MAX_DATETIME_LENGTH and _DATETIME.fullmatch(value) is not None


_match_datetime = _DATETIME.fullmatch
_fromisoformat = datetime.fromisoformat


def parse_datetime(value: object) -> datetime | None:
    """An atproto datetime as an aware datetime (in its own offset), or None if `value` is
    not a string of datetime syntax, names no real instant, or one before year 1 UTC (which
    Python cannot hold: `0000-01-01T00:00:00Z` is valid syntax but parses to None)."""
    # This runs once per record in the decode loop, so is_valid_datetime is inlined, and the
    # usual form, `YYYY-MM-DDTHH:MM:SS.sssZ`, skips the regex (its cost is most of the
    # parse): with those separators in place, fromisoformat accepts exactly ASCII digits in
    # every other position (tests/atproto/test_syntax.py tries each character there).
    if type(value) is not str:
        return None
    if not (len(value) == 24 and value[4:20:3] == "--T::." and value[23] == "Z") and (
        len(value) > MAX_DATETIME_LENGTH or _match_datetime(value) is None
    ):
        return None
    try:
        # fromisoformat reads every string of this syntax exactly (Z, any number of
        # fractional digits, truncated to microseconds) and checks the fields' ranges.
        parsed = _fromisoformat(value)
        if parsed.year == 1:
            parsed.astimezone(UTC)  # OverflowError if the offset takes it below year 1
    except (ValueError, OverflowError):
        return None
    return parsed

"""The atproto interop syntax vectors (tests/interop/vectors/syntax/), every line of each.

The files' own convention (as the reference implementations read them): a line starting
with `#` is a comment, an empty line is skipped, and every other line is a value exactly
as written, leading and trailing spaces included (they are what some invalid lines test).
One test per file, reporting every line that is misjudged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from skyfill.atproto import syntax
from skyfill.atproto.exceptions import InvalidDid

VECTORS = Path(__file__).parent / "vectors" / "syntax"


def _lines(name: str) -> list[str]:
    text = (VECTORS / name).read_text(encoding="utf-8")
    return [line for line in text.split("\n") if line and not line.startswith("#")]


def _raises(validate: Callable[[str], str], error: type[Exception]) -> Callable[[str], bool]:
    """A validator as a predicate that also checks its return value and its error type."""

    def check(value: str) -> bool:
        try:
            returned = validate(value)
        except error:
            return False
        assert returned == value
        return True

    return check


CHECKS: dict[str, Callable[[str], bool]] = {
    "did": _raises(syntax.validate_did, InvalidDid),
    "handle": _raises(syntax.validate_handle, syntax.InvalidSyntax),
    "nsid": _raises(syntax.validate_nsid, syntax.InvalidSyntax),
    "tid": _raises(syntax.validate_tid, syntax.InvalidSyntax),
    "recordkey": _raises(syntax.validate_record_key, syntax.InvalidSyntax),
    "aturi": _raises(syntax.validate_at_uri, syntax.InvalidSyntax),
    "datetime": _raises(syntax.validate_datetime, syntax.InvalidSyntax),
    "atidentifier": syntax.is_valid_at_identifier,
    "cid": syntax.is_valid_cid,
}
BOOLEAN_TWINS: dict[str, Callable[[str], bool]] = {
    "did": syntax.is_valid_did,
    "handle": syntax.is_valid_handle,
    "nsid": syntax.is_valid_nsid,
    "tid": syntax.is_valid_tid,
    "recordkey": syntax.is_valid_record_key,
    "aturi": syntax.is_valid_at_uri,
    "datetime": syntax.is_valid_datetime,
}


def test_every_vector_file_is_checked() -> None:
    kinds = {p.name.split("_syntax_")[0] for p in VECTORS.glob("*_syntax_*.txt")}
    # `language` and `uri` (generic URIs) are formats skyfill does not read.
    assert kinds - {"language", "uri"} == set(CHECKS)


@pytest.mark.parametrize("kind", sorted(CHECKS))
@pytest.mark.parametrize("expected", [True, False], ids=["valid", "invalid"])
def test_syntax_vectors(kind: str, expected: bool) -> None:
    lines = _lines(f"{kind}_syntax_{'valid' if expected else 'invalid'}.txt")
    assert lines
    checks = [CHECKS[kind]] + ([BOOLEAN_TWINS[kind]] if kind in BOOLEAN_TWINS else [])
    wrong = [line for line in lines for check in checks if check(line) is not expected]
    assert not wrong, f"{len(wrong)} {kind} vector(s) misjudged: {[w[:90] for w in wrong]}"


def test_valid_datetimes_parse() -> None:
    """Every valid datetime parses to an aware datetime, except year 0 (Python has none)."""
    wrong = []
    for line in _lines("datetime_syntax_valid.txt"):
        parsed = syntax.parse_datetime(line)
        if line.startswith("0000-"):
            wrong += [line] if parsed is not None else []
        elif parsed is None or parsed.tzinfo is None:
            wrong.append(line)
    assert not wrong


def test_datetime_parse_invalid_vectors() -> None:
    """Syntax that passes, values that do not: month 0, hour 25, second 61, before year 0."""
    lines = _lines("datetime_parse_invalid.txt")
    assert lines
    assert [line for line in lines if not syntax.is_valid_datetime(line)] == []
    assert [line for line in lines if syntax.parse_datetime(line) is not None] == []


def test_invalid_datetimes_do_not_parse() -> None:
    lines = _lines("datetime_syntax_invalid.txt")
    assert [line for line in lines if syntax.parse_datetime(line) is not None] == []

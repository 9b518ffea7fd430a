"""syntax.py beyond the interop vectors: no trailing newline slips through, the datetime fast
path agrees with the rule, the repo path rule, and the typed errors."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from skyfill.atproto import syntax
from skyfill.atproto.exceptions import InvalidDid

VALID = {
    syntax.is_valid_did: "did:plc:abcdefghijklmnopqrstuvwx",
    syntax.is_valid_handle: "alice.example.com",
    syntax.is_valid_nsid: "app.bsky.feed.post",
    syntax.is_valid_record_key: "self",
    syntax.is_valid_tid: "3kabcdefghijk",
    syntax.is_valid_at_uri: "at://did:plc:abcdefghijklmnopqrstuvwx/app.bsky.feed.post/self",
    syntax.is_valid_datetime: "1985-04-12T23:20:50.123Z",
    syntax.is_valid_repo_path: "app.bsky.feed.post/self",
}


@pytest.mark.parametrize("check", list(VALID), ids=lambda f: f.__name__)
@pytest.mark.parametrize("suffix", ["\n", " ", "\r\n", "\x00", "\u00a0", "\u0661"])
def test_nothing_may_follow_a_valid_identifier(check, suffix: str) -> None:
    assert check(VALID[check])
    assert not check(VALID[check] + suffix)


def test_validators_raise_typed_errors_and_return_the_value() -> None:
    assert syntax.validate_nsid("app.bsky.feed.post") == "app.bsky.feed.post"
    with pytest.raises(InvalidDid, match="not a valid DID"):
        syntax.validate_did("did:plc:abc\n")
    for validate in (
        syntax.validate_handle,
        syntax.validate_nsid,
        syntax.validate_record_key,
        syntax.validate_tid,
        syntax.validate_at_uri,
        syntax.validate_datetime,
        syntax.validate_repo_path,
    ):
        with pytest.raises(syntax.InvalidSyntax):
            validate("a b")
    assert issubclass(syntax.InvalidSyntax, ValueError)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1985-04-12T23:20:50.123Z", datetime(1985, 4, 12, 23, 20, 50, 123000, tzinfo=UTC)),
        ("1985-04-12T23:20:50Z", datetime(1985, 4, 12, 23, 20, 50, tzinfo=UTC)),
        (
            "1985-04-12T23:20:50.1234567Z",
            datetime(1985, 4, 12, 23, 20, 50, 123456, tzinfo=UTC),
        ),
        (
            "1985-04-12T23:20:50.5-07:00",
            datetime(1985, 4, 12, 23, 20, 50, 500000, tzinfo=timezone(timedelta(hours=-7))),
        ),
        ("0001-01-01T00:00:00+00:30", None),  # before year 1 in UTC
        ("1985-02-29T00:00:00Z", None),
        ("1985-04-12T23:20:50.123+24:00", None),
        (1985, None),
        (None, None),
    ],
)
def test_parse_datetime(value: object, expected: datetime | None) -> None:
    parsed = syntax.parse_datetime(value)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == expected.utcoffset()  # pyright: ignore[reportOptionalMemberAccess]


_OTHER_DIGITS = "\u0664\u06f4\u07c4\uff14\U0001d7d2\u00b2\u2028"
_CANDIDATES = [chr(c) for c in range(0x250)] + list(_OTHER_DIGITS)


@pytest.mark.parametrize("position", range(24))
def test_the_usual_datetime_form_is_parsed_only_when_valid(position: int) -> None:
    """parse_datetime reads `YYYY-MM-DDTHH:MM:SS.sssZ` without the regex: every single
    character changed, anywhere, is parsed only if the rule allows it."""
    base = "2024-03-04T05:06:07.123Z"
    wrong = []
    for c in _CANDIDATES:
        value = base[:position] + c + base[position + 1 :]
        if syntax.parse_datetime(value) is not None and not syntax.is_valid_datetime(value):
            wrong.append(value)
    assert wrong == []


def test_repo_paths() -> None:
    assert syntax.is_valid_repo_path("com.example.thing/~1.2-3_:x")
    for path in ["com.example.thing", "com.example.thing/", "/self", "a/b", "x.y.z/a/b"]:
        assert not syntax.is_valid_repo_path(path)


def test_nsid_prefixes_of_collection_globs() -> None:
    assert syntax.is_nsid_prefix("app.bsky.")
    assert syntax.is_nsid_prefix("app.bsky.feed.p")
    assert not syntax.is_nsid_prefix("app.bsky.\n")
    assert not syntax.is_nsid_prefix("1app.")


@pytest.mark.parametrize("position", range(32))
def test_a_plc_did_skips_the_regex_only_when_valid(position: int) -> None:
    """is_valid_did reads `did:plc:` and ASCII letters and digits without the regex: every
    single character changed, anywhere, agrees with the rule."""
    base = "did:plc:abcdefghijklmnopqrstuvwx"
    wrong = []
    for c in [*_CANDIDATES, ""]:
        value = base[:position] + c + base[position + 1 :]
        if syntax.is_valid_did(value) != (syntax._DID.fullmatch(value) is not None):
            wrong.append(value)
    assert wrong == []
    assert not syntax.is_valid_did("did:plc:")
    assert not syntax.is_valid_did("did:plc:" + "a" * syntax.MAX_DID_LENGTH)


@pytest.mark.parametrize("position", range(32))
def test_repo_path_fast_paths_agree_with_the_rule(position: int) -> None:
    """is_valid_repo_path caches collections and reads ASCII alphanumeric record keys
    without the regex: every single character changed, anywhere, agrees with the rule
    (asked twice, so that the second answer comes from the cache)."""
    base = "app.bsky.feed.post/3kabcdefghijk"
    wrong = []
    for c in [*_CANDIDATES, ""]:
        value = base[:position] + c + base[position + 1 :]
        collection, _, rkey = value.partition("/")
        rule = syntax.is_valid_nsid(collection) and syntax.is_valid_record_key(rkey)
        if not syntax.is_valid_repo_path(value) == syntax.is_valid_repo_path(value) == rule:
            wrong.append(value)
    assert wrong == []
    assert syntax.is_valid_repo_path("a.b.c/" + "a" * syntax.MAX_RECORD_KEY_LENGTH)
    assert not syntax.is_valid_repo_path("a.b.c/" + "a" * (syntax.MAX_RECORD_KEY_LENGTH + 1))

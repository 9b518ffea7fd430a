"""`--collections`: pattern syntax, matching, and the filter applied while decoding."""

from __future__ import annotations

import pytest

from skyfill.atproto.repo import build_repo
from skyfill.backfill.collections import CollectionFilter, parse_collections
from skyfill.backfill.decode import decode_to_table
from skyfill.errors import UsageError


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        ("", None),
        ("all", None),
        ("*", None),
        ("app.bsky.feed.post", ["app.bsky.feed.post"]),
        (" app.bsky.feed.post , app.bsky.graph.* ,", ["app.bsky.feed.post", "app.bsky.graph.*"]),
        (
            ["app.bsky.feed.like", "app.bsky.feed.like", "com.example.*"],
            ["app.bsky.feed.like", "com.example.*"],
        ),
        ("app.bsky.feed.post,*", None),
        ("app.bsky.feed.p*", ["app.bsky.feed.p*"]),
    ],
)
def test_patterns(value: str | list[str] | None, expected: list[str] | None) -> None:
    assert parse_collections(value) == expected


@pytest.mark.parametrize(
    ("value", "needle"),
    [
        ("app.bsky", "not an NSID"),
        ("app.bsky.feed.post/abc", "not an NSID"),
        ("app.*.post", "may only end"),
        ("app.bsky.feed.post?", "not an NSID"),
        ("app..bsky.*", "not the beginning of an NSID"),
        ("1app.bsky.*", "not the beginning of an NSID"),
    ],
)
def test_bad_patterns_are_refused_by_name(value: str, needle: str) -> None:
    with pytest.raises(UsageError, match=needle) as caught:
        parse_collections(value)
    assert value.split(",")[0] in str(caught.value)


def test_matching() -> None:
    keep = CollectionFilter.from_patterns(["app.bsky.feed.post", "app.bsky.graph.*"])
    assert keep("app.bsky.feed.post") and keep("app.bsky.graph.follow")
    assert keep("app.bsky.graph.block")
    assert not keep("app.bsky.feed.postgate") and not keep("app.bsky.feed.like")
    assert not keep("app.bsky.graphs.x")


RECORDS = {
    "app.bsky.actor.profile/self": {"$type": "app.bsky.actor.profile", "displayName": "x"},
    "app.bsky.feed.like/3k2a": {"$type": "app.bsky.feed.like", "createdAt": "2025-01-01T00:00Z"},
    "app.bsky.feed.post/3k2b": {"$type": "app.bsky.feed.post", "text": "a"},
    "app.bsky.feed.post/3k2c": {"$type": "app.bsky.feed.post", "text": "b"},
    "app.bsky.graph.follow/3k2d": {"$type": "app.bsky.graph.follow", "subject": "did:plc:x"},
}


def test_decoding_keeps_only_matching_records_and_counts_them() -> None:
    did = "did:plc:" + "a" * 24
    car, _, _ = build_repo(did, "3rev", RECORDS)
    everything = decode_to_table(car, did, "j")
    assert everything.record_count == 5 and everything.table.num_rows == 5
    some = decode_to_table(car, did, "j", collections=["app.bsky.feed.post", "app.bsky.graph.*"])
    assert some.table.column("collection").to_pylist() == [
        "app.bsky.feed.post",
        "app.bsky.feed.post",
        "app.bsky.graph.follow",
    ]
    assert some.record_count == 3  # the kept records, not the whole repo
    assert some.table.column("rkey").to_pylist() == ["3k2b", "3k2c", "3k2d"]

"""MST keys are repo paths, `<collection NSID>/<record key>`: anything else is mst_invalid_key,
and the repo gives no rows (so no row has a broken at:// URI). Also: strict createdAt."""

from __future__ import annotations

import pytest

from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.repo import build_repo, decode_repo
from skyfill.atproto.syntax import is_valid_repo_path

DID = "did:plc:abcdefghijklmnopqrstuvwx"
REV = "3kabcdefghijk"
GOOD = {"app.bsky.feed.like/3kabcdefghijk": {"text": "fine"}}


@pytest.mark.parametrize(
    "path",
    [
        "app.bsky.feed.post/a b",
        "app.bsky.feed.post/..",
        "app.bsky.feed.post/.",
        "app.bsky.feed.post/a/b",
        "app.bsky.feed.post/",
        "app.bsky.feed.post/self\n",
        "app.bsky.feed.post/caf\u00e9",
        "app.bsky.feed.post/\u0661\u0662\u00b2",
        "app.bsky.feed.post/selfie\u2028",
        "app.bsky.feed.post/" + "o" * 513,
        "app.bsky.feed.post",
        "app.bsky.feed_post/self",
        "bsky/self",
        "/self",
    ],
)
def test_an_invalid_repo_path_is_mst_invalid_key(path: str) -> None:
    assert not is_valid_repo_path(path)
    car, _, _ = build_repo(DID, REV, {**GOOD, path: {"text": "bad key"}})
    with pytest.raises(InvalidRepo) as caught:
        decode_repo(car, expected_did=DID)
    assert caught.value.kind is RepoFault.MST_INVALID_KEY
    assert caught.value.error_class == "mst_invalid_key"


@pytest.mark.parametrize(
    "path",
    [
        "app.bsky.feed.post/3kabcdefghijk",
        "app.bsky.actor.profile/self",
        "com.example.thing/~1.2-3_:x",
        "com.example.thing/...",
        "com.example.thing/" + "o" * 512,
    ],
)
def test_valid_repo_paths_decode(path: str) -> None:
    assert is_valid_repo_path(path)
    repo = decode_repo(build_repo(DID, REV, {**GOOD, path: {"text": "ok"}})[0], expected_did=DID)
    collection, _, rkey = path.partition("/")
    assert sorted(zip(repo.collections, repo.rkeys, strict=True)) == sorted(
        [("app.bsky.feed.like", "3kabcdefghijk"), (collection, rkey)]
    )


def test_an_invalid_key_in_a_filtered_out_collection_is_still_invalid() -> None:
    """The rule holds for the whole repo, not only for the collections kept."""
    car, _, _ = build_repo(DID, REV, {**GOOD, "com.example.other/a b": {}})
    with pytest.raises(InvalidRepo) as caught:
        decode_repo(car, expected_did=DID, keep_collection=lambda c: c == "app.bsky.feed.like")
    assert caught.value.kind is RepoFault.MST_INVALID_KEY


@pytest.mark.parametrize(
    ("created", "valid"),
    [
        ("1985-04-12T23:20:50.123Z", True),
        ("1985-04-12T23:20:50+01:45", True),
        ("1985-04-12T23:20Z", False),
        ("1985-04-12T23:20:50.123+00", False),
        ("1985-04-12T23:20:50.123-00:00", False),
        ("1985-04-12T23:20:50.Z", False),
        ("1985-04-12T23:20:50.123z", False),
        ("1985-04-12 23:20:50.123Z", False),
        ("1985-04-12T23:20:50.123Z\n", False),
        ("1985-13-12T23:20:50.123Z", False),
    ],
)
def test_created_at_is_read_strictly(created: str, valid: bool) -> None:
    path = "app.bsky.feed.post/3kabcdefghijk"
    repo = decode_repo(build_repo(DID, REV, {path: {"createdAt": created}})[0], expected_did=DID)
    assert (repo.created_at[0] is not None) is valid
    if valid:
        assert repo.created_at[0].tzinfo is not None

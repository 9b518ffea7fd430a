"""The records rows of a repo: every `uri` is a valid AT URI, or the repo gives no rows."""

from __future__ import annotations

import random

import pytest

from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.repo import build_repo
from skyfill.atproto.syntax import is_valid_at_uri
from skyfill.backfill.decode import decode_to_table
from skyfill.simnet.accounts import generate_records

DID = "did:plc:abcdefghijklmnopqrstuvwx"
REV = "3kabcdefghijk"


def test_every_row_has_a_valid_at_uri() -> None:
    records = generate_records(random.Random(5), 300, [DID])
    decoded = decode_to_table(build_repo(DID, REV, records)[0], DID, "job")
    uris = decoded.table.column("uri").to_pylist()
    assert len(uris) == len(records) == decoded.record_count
    assert [u for u in uris if not is_valid_at_uri(u)] == []


@pytest.mark.parametrize("bad", ["app.bsky.feed.post/a b", "app.bsky.feed.post/..", "x/y"])
def test_a_repo_with_an_invalid_path_gives_no_rows(bad: str) -> None:
    records = {**generate_records(random.Random(5), 50, [DID]), bad: {"text": "x"}}
    with pytest.raises(InvalidRepo) as caught:
        decode_to_table(build_repo(DID, REV, records)[0], DID, "job")
    assert caught.value.kind is RepoFault.MST_INVALID_KEY

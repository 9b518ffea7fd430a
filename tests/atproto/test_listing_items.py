"""listRepos / listReposByCollection / listHosts items: strict DID, rev and hostname
syntax. A bad item raises (InvalidDid or ValueError), which the Listing turns into one
skipped, counted item."""

from __future__ import annotations

import pytest

from skyfill.atproto.exceptions import InvalidDid
from skyfill.atproto.listing import (
    ListedHost,
    parse_listed_did,
    parse_listed_host,
    parse_listed_repo,
)

DID = "did:plc:abcdefghijklmnopqrstuvwx"
HEAD = "bafyreie5737gdxlw5i64vzichcalba3z2v5n6icifvx5xytvske7mr3hpm"


def test_a_valid_item_is_read() -> None:
    item = {"did": DID, "head": HEAD, "rev": "3kabcdefghijk", "active": True}
    listed = parse_listed_repo(item)
    assert (listed.did, listed.rev, listed.active) == (DID, "3kabcdefghijk", True)
    assert parse_listed_did({"did": DID}) == DID


@pytest.mark.parametrize(
    "did",
    [
        DID + "\n",
        DID + " ",
        " " + DID,
        "did:PLC:abcdefghijklmnopqrstuvwx",
        "did:plc:abcdefghijklmnopqrstuvw",
        "did:web:example.com:",
        "did:key:zQ3shokFTS3brHcD",
        "at://" + DID,
    ],
)
def test_an_item_whose_did_is_not_valid_is_refused(did: str) -> None:
    with pytest.raises(InvalidDid):
        parse_listed_repo({"did": did, "head": HEAD, "rev": "3kabcdefghijk"})
    with pytest.raises(InvalidDid):
        parse_listed_did({"did": did})


@pytest.mark.parametrize(
    "rev", ["3kabcdefghijk\n", "3KABCDEFGHIJK", "zzzzzzzzzzzzz", "3kabcdefghij"]
)
def test_an_item_whose_rev_is_not_a_tid_is_refused(rev: str) -> None:
    with pytest.raises(ValueError, match="rev is not a TID"):
        parse_listed_repo({"did": DID, "head": HEAD, "rev": rev})


def test_a_valid_host_item_is_read() -> None:
    item = {"hostname": "PDS.Example.com", "seq": 7, "accountCount": 0, "status": "offline"}
    assert parse_listed_host(item) == ListedHost("pds.example.com", "offline", 0, 7)
    bare = parse_listed_host({"hostname": "127.0.0.1:2583"})
    assert bare == ListedHost("127.0.0.1:2583", None, None, None)


@pytest.mark.parametrize(
    "item",
    [
        {"hostname": "https://pds.example.com"},
        {"hostname": "pds.example.com/xrpc"},
        {"hostname": "pds.example.com "},
        {"hostname": "pds..example.com"},
        {"hostname": "-pds.example.com"},
        {"hostname": "pds.example.com:0"},
        {"hostname": "pds.example.com:99999"},
        {"hostname": "pds.example.com:"},
        {"hostname": ""},
        {"hostname": 5},
        {"host": "pds.example.com"},
        {"hostname": "pds.example.com", "accountCount": -1},
        {"hostname": "pds.example.com", "seq": "12"},
        {"hostname": "pds.example.com", "seq": True},
        {"hostname": "pds.example.com", "status": 3},
        "pds.example.com",
    ],
)
def test_a_host_item_that_is_not_a_bare_hostname_is_refused(item: object) -> None:
    with pytest.raises(ValueError):
        parse_listed_host(item)

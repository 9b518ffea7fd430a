"""DID syntax validation and did:web URLs."""

from __future__ import annotations

import pytest

from skyfill.atproto.did import validate_did
from skyfill.atproto.exceptions import InvalidDid
from skyfill.atproto.identity.web import did_web_url


@pytest.mark.parametrize(
    "did",
    [
        "did:plc:z72i7hdynmk6r22z27h6tvur",
        "did:web:example.com",
        "did:web:localhost%3A8080",
    ],
)
def test_valid_dids(did: str) -> None:
    assert validate_did(did) == did


@pytest.mark.parametrize(
    "did",
    [
        "",
        "did",
        "did:plc:",
        "did:plc:short",
        "did:plc:Z72I7HDYNMK6R22Z27H6TVUR",
        "did:plc:z72i7hdynmk6r22z27h6tvur0",
        "did:key:zQ3shokFTS3brHcD",
        "did:web:exa mple.com",
        "did:web:example.com/path",
        "at://did:plc:z72i7hdynmk6r22z27h6tvur",
        "did:plc:" + "a" * 3000,
    ],
)
def test_invalid_dids(did: str) -> None:
    with pytest.raises(InvalidDid):
        validate_did(did)


def test_did_web_urls() -> None:
    assert did_web_url("did:web:example.com") == "https://example.com/.well-known/did.json"
    assert did_web_url("did:web:localhost%3A8080") == "http://localhost:8080/.well-known/did.json"

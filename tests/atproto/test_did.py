"""DIDs skyfill resolves (did:plc, did:web), the generic DID syntax, and did:web URLs."""

from __future__ import annotations

import pytest

from skyfill.atproto.did import validate_supported_did
from skyfill.atproto.exceptions import InvalidDid
from skyfill.atproto.identity.web import did_web_url
from skyfill.atproto.syntax import validate_did


@pytest.mark.parametrize(
    "did",
    [
        "did:plc:z72i7hdynmk6r22z27h6tvur",
        "did:web:example.com",
        "did:web:localhost%3A8080",
    ],
)
def test_valid_dids(did: str) -> None:
    assert validate_supported_did(did) == did


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
        "did:plc:z72i7hdynmk6r22z27h6tvur\n",
        "did:plc:z72i7hdynmk6r22z27h6tvur ",
        "did:PLC:z72i7hdynmk6r22z27h6tvur",
        "DID:plc:z72i7hdynmk6r22z27h6tvur",
        "did:web:example.com%",
        "did:web:example.com:",
    ],
)
def test_invalid_dids(did: str) -> None:
    with pytest.raises(InvalidDid):
        validate_supported_did(did)


@pytest.mark.parametrize(
    ("did", "why"),
    [
        ("did:key:zQ3shokFTS3brHcD", "unsupported DID method"),
        ("did:plc:short", "malformed did:plc"),
        ("did:web:exa_mple.com", "malformed did:web"),
        ("did:plc:abc\n", "not a valid DID"),
    ],
)
def test_supported_dids_say_which_rule_is_broken(did: str, why: str) -> None:
    """Generic DID syntax first, then the methods skyfill resolves."""
    with pytest.raises(InvalidDid, match=why):
        validate_supported_did(did)


def test_generic_did_syntax_is_broader_than_what_skyfill_resolves() -> None:
    assert validate_did("did:key:zQ3shokFTS3brHcD") == "did:key:zQ3shokFTS3brHcD"
    with pytest.raises(InvalidDid):
        validate_did("did:method:val\n")


def test_did_web_urls() -> None:
    assert did_web_url("did:web:example.com") == "https://example.com/.well-known/did.json"
    assert did_web_url("did:web:localhost%3A8080") == "http://localhost:8080/.well-known/did.json"

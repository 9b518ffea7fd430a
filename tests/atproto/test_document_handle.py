"""The handle a DID document declares (`alsoKnownAs: ["at://<handle>"]`): strict handle
syntax, lower-cased; anything else is no handle."""

from __future__ import annotations

import pytest

from skyfill.atproto.identity.document import identity_from_document

DID = "did:plc:abcdefghijklmnopqrstuvwx"


def _doc(aliases: object) -> dict:
    return {
        "id": DID,
        "alsoKnownAs": aliases,
        "service": [
            {
                "id": "#atproto_pds",
                "type": "AtprotoPersonalDataServer",
                "serviceEndpoint": "https://pds.example.com",
            }
        ],
    }


@pytest.mark.parametrize(
    ("aliases", "handle"),
    [
        (["at://alice.example.com"], "alice.example.com"),
        (["at://Alice.Example.COM"], "alice.example.com"),
        (["https://alice.example.com", "at://alice.test"], "alice.test"),
        (["at://xn--ls8h.test"], "xn--ls8h.test"),
    ],
)
def test_a_valid_handle_is_read_lower_cased(aliases: list[str], handle: str) -> None:
    assert identity_from_document(DID, _doc(aliases)).handle == handle


@pytest.mark.parametrize(
    "aliases",
    [
        ["at://alice"],
        ["at://alice.example.com "],
        ["at://alice.example.com\n"],
        ["at://alice..example.com"],
        ["at://-alice.example.com"],
        ["at://alice.example.com/app.bsky.feed.post"],
        ["at://al_ice.example.com"],
        ["at://alice.example.123"],
        ["at://127.0.0.1"],
        ["at://bücher.example"],
        ["at://" + "a" * 64 + ".example.com"],
        ["at://did:plc:abcdefghijklmnopqrstuvwx"],
        ["at://"],
        ["at://bad_handle.test", "at://alice.test"],
        [],
        "at://alice.test",
        None,
    ],
)
def test_an_invalid_handle_is_no_handle(aliases: object) -> None:
    identity = identity_from_document(DID, _doc(aliases))
    assert identity.handle is None
    assert identity.pds == "https://pds.example.com"

"""The interop crypto vectors (`vectors/crypto/`) through `skyfill.atproto.crypto`.

`signature-fixtures.json`: each fixture's signature verifies exactly when `validSignature`
says so (high-S and DER-encoded signatures are invalid in atproto), and its DID-document
form (`publicKeyMultibase` with the legacy `didDocSuite` type) is the same key as its
did:key. `w3c_didkey_K256.json` / `w3c_didkey_P256.json`: a private key gives the listed
did:key. Then our own properties: sign/verify round trips, refused variants, and
malformed did:keys that raise InvalidKey and nothing else.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import libipld
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyfill.atproto.crypto import (
    Curve,
    InvalidKey,
    Keypair,
    high_s,
    parse_did_key,
    parse_multikey,
    verify,
    verify_signature,
)

VECTORS = Path(__file__).parent / "vectors" / "crypto"
MESSAGE = b"an atproto commit, unsigned"


def _load(name: str) -> list[dict]:
    return json.loads((VECTORS / name).read_text())


def _b64(text: str) -> bytes:
    return base64.b64decode(text + "=" * (-len(text) % 4))


SIGNATURES = _load("signature-fixtures.json")
DID_KEYS = [(Curve.K256, v) for v in _load("w3c_didkey_K256.json")] + [
    (Curve.P256, v) for v in _load("w3c_didkey_P256.json")
]


def _private_bytes(vector: dict) -> bytes:
    if "privateKeyBytesHex" in vector:
        return bytes.fromhex(vector["privateKeyBytesHex"])
    return bytes(libipld.decode_multibase("z" + vector["privateKeyBytesBase58"])[1])


@pytest.mark.parametrize("fixture", SIGNATURES, ids=[f["comment"] for f in SIGNATURES])
def test_signature_fixture(fixture: dict) -> None:
    message, signature = _b64(fixture["messageBase64"]), _b64(fixture["signatureBase64"])
    got = verify_signature(fixture["publicKeyDid"], message, signature)
    assert got is fixture["validSignature"]


@pytest.mark.parametrize("fixture", SIGNATURES, ids=[f["comment"] for f in SIGNATURES])
def test_signature_fixture_multikey_is_the_did_key(fixture: dict) -> None:
    from_document = parse_multikey(fixture["publicKeyMultibase"], fixture["didDocSuite"])
    assert from_document == parse_did_key(fixture["publicKeyDid"])
    assert from_document.did_key == fixture["publicKeyDid"]


@pytest.mark.parametrize(
    ("curve", "vector"), DID_KEYS, ids=[f"{c}-{v['publicDidKey'][-12:]}" for c, v in DID_KEYS]
)
def test_private_key_gives_its_did_key(curve: Curve, vector: dict) -> None:
    keypair = Keypair.from_private_bytes(curve, _private_bytes(vector))
    assert keypair.did_key == vector["publicDidKey"]
    parsed = parse_did_key(vector["publicDidKey"])
    assert parsed.curve is curve
    assert parsed.did_key == vector["publicDidKey"]
    assert parsed == keypair.public


@pytest.mark.parametrize("curve", list(Curve))
def test_sign_and_verify_round_trip(curve: Curve) -> None:
    keypair = Keypair.from_seed(curve, "interop")
    signature = keypair.sign(MESSAGE)
    assert len(signature) == 64
    assert verify(keypair.public, MESSAGE, signature)
    assert verify_signature(keypair.did_key, MESSAGE, signature)
    assert verify_signature(keypair.public.multikey, MESSAGE, signature)


@pytest.mark.parametrize("curve", list(Curve))
def test_high_s_is_refused(curve: Curve) -> None:
    keypair = Keypair.from_seed(curve, "interop")
    assert not verify(keypair.public, MESSAGE, high_s(curve, keypair.sign(MESSAGE)))


@pytest.mark.parametrize("curve", list(Curve))
@pytest.mark.parametrize("bit", [0, 7, 255, 256, 511])
def test_flipped_bit_is_refused(curve: Curve, bit: int) -> None:
    keypair = Keypair.from_seed(curve, "interop")
    signature = bytearray(keypair.sign(MESSAGE))
    signature[bit // 8] ^= 1 << (bit % 8)
    assert not verify(keypair.public, MESSAGE, bytes(signature))
    message = bytearray(MESSAGE)
    message[bit % len(message)] ^= 1
    assert not verify(keypair.public, bytes(message), keypair.sign(MESSAGE))


@pytest.mark.parametrize("curve", list(Curve))
def test_wrong_key_is_refused(curve: Curve) -> None:
    signature = Keypair.from_seed(curve, "interop").sign(MESSAGE)
    assert not verify(Keypair.from_seed(curve, "another").public, MESSAGE, signature)
    other_curve = Curve.P256 if curve is Curve.K256 else Curve.K256
    assert not verify(Keypair.from_seed(other_curve, "interop").public, MESSAGE, signature)


@pytest.mark.parametrize("length", [0, 63, 65, 70, 72])
def test_signature_of_wrong_length_is_refused(length: int) -> None:
    keypair = Keypair.from_seed(Curve.P256, "interop")
    signature = (keypair.sign(MESSAGE) * 2)[:length]
    assert not verify(keypair.public, MESSAGE, signature)


_VALID_K256 = DID_KEYS[0][1]["publicDidKey"]
_ED25519 = "did:key:z6MkhaXgBZDvotDkL5257faiztiGiC2QtKLGpbnnEGta2doK"
MALFORMED_DID_KEYS = [
    "",
    "did:key:",
    "did:key:z",
    "did:key:abc",
    "did:key:z!!!",
    "did:key:z0OIl",
    "did:key:\x00",
    "did:key:zé",
    "did:web:example.com",
    _ED25519,
    _VALID_K256[:-1],
    _VALID_K256 + "2",
    "did:key:" + libipld.encode_multibase("z", b"\xe7\x01" + b"\x02" + b"\xff" * 32),
    "did:key:" + libipld.encode_multibase("z", b"\x80\x24" + b"\x04" + b"\x01" * 64),
    "did:key:" + libipld.encode_multibase("z", b"\x80\x24" + b"\x05" + b"\x01" * 32),
    "did:key:" + libipld.encode_multibase("u", b"\xe7\x01" + b"\x02" + b"\x01" * 32),
]


@pytest.mark.parametrize("did_key", MALFORMED_DID_KEYS, ids=range(len(MALFORMED_DID_KEYS)))
def test_malformed_did_key_raises_invalid_key(did_key: str) -> None:
    with pytest.raises(InvalidKey):
        parse_did_key(did_key)
    with pytest.raises(InvalidKey):
        verify_signature(did_key, MESSAGE, b"\x01" * 64)


@pytest.mark.parametrize("value", [None, 123, b"did:key:z", ["did:key:z"]])
def test_did_key_that_is_not_a_string_raises_invalid_key(value: object) -> None:
    with pytest.raises(InvalidKey):
        parse_did_key(value)  # pyright: ignore[reportArgumentType]


_KEY_BYTES = st.one_of(
    st.binary(max_size=80),
    st.sampled_from([b"\xe7\x01", b"\x80\x24"]).flatmap(
        lambda prefix: st.binary(min_size=30, max_size=70).map(lambda rest: prefix + rest)
    ),
)


@given(st.one_of(st.text(max_size=80), _KEY_BYTES.map(lambda b: libipld.encode_multibase("z", b))))
def test_any_did_key_string_parses_or_raises_invalid_key(text: str) -> None:
    for candidate in (text, "did:key:" + text):
        try:
            key = parse_did_key(candidate)
        except InvalidKey:
            continue
        assert parse_did_key(key.did_key) == key

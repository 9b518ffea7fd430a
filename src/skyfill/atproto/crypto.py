"""atproto's two signature curves: did:key / multikey parsing, verifying and signing.

A repo commit is signed with ECDSA over sha256 by the key in the DID document's `#atproto`
verification method: P-256 (multicodec 0x1200) or secp256k1 (0xe7), published as a
multibase (base58btc `z`) compressed point. Signatures are 64 bytes `r‖s`, and only the
low-S form is valid in atproto (a high-S signature is refused, so a signature cannot be
malleated into a second valid one). The curve arithmetic is a library's: secp256k1 by
`coincurve` (libsecp256k1, ~10x faster at verifying than OpenSSL's generic code for that
curve, which matters at one verify per repo), P-256 by `cryptography` (OpenSSL).
"""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from enum import StrEnum

import coincurve
import libipld
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

DID_KEY_PREFIX = "did:key:"
_COMPRESSED_ENCODING = Encoding.X962
_COMPRESSED_FORMAT = PublicFormat.CompressedPoint


class Curve(StrEnum):
    P256 = "p256"
    K256 = "k256"


_MULTICODEC = {Curve.P256: b"\x80\x24", Curve.K256: b"\xe7\x01"}
"""The varint multicodec prefix of a compressed public key: p256-pub 0x1200, secp256k1-pub 0xe7."""
_CURVES: dict[Curve, ec.EllipticCurve] = {Curve.P256: ec.SECP256R1(), Curve.K256: ec.SECP256K1()}
_ORDER = {
    Curve.P256: 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551,
    Curve.K256: 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141,
}
_LEGACY_TYPES = {
    "EcdsaSecp256r1VerificationKey2019": Curve.P256,
    "EcdsaSecp256k1VerificationKey2019": Curve.K256,
}
"""Older DID documents name the curve in the method's type and publish the bare point."""


class InvalidKey(ValueError):
    """The string is not a public key of a supported curve."""


@dataclass(frozen=True, slots=True)
class PublicKey:
    curve: Curve
    point: bytes
    """The compressed point (33 bytes)."""

    @property
    def multikey(self) -> str:
        return libipld.encode_multibase("z", _MULTICODEC[self.curve] + self.point)

    @property
    def did_key(self) -> str:
        return DID_KEY_PREFIX + self.multikey


def parse_multikey(value: str, method_type: str = "Multikey") -> PublicKey:
    """The public key of a DID document's verification method (`publicKeyMultibase`)."""
    if not isinstance(value, str) or not value.startswith("z"):
        raise InvalidKey(f"not a base58btc multibase key: {str(value)[:80]!r}")
    try:
        raw = bytes(libipld.decode_multibase(value)[1])
    except Exception:
        raise InvalidKey(f"not a base58btc multibase key: {value[:80]!r}") from None
    legacy = _LEGACY_TYPES.get(method_type)
    if legacy is not None:
        return _public_key(legacy, raw)
    for curve, prefix in _MULTICODEC.items():
        if raw.startswith(prefix):
            return _public_key(curve, raw[len(prefix) :])
    raise InvalidKey(f"unsupported key type (multicodec {raw[:2].hex()}): {value[:80]}")


def parse_did_key(did_key: str) -> PublicKey:
    """`did:key:z…` (or the bare multikey `z…`) to its curve and compressed point."""
    if not isinstance(did_key, str):
        raise InvalidKey("a did:key must be a string")
    return _parsed_did_key(did_key)


@functools.lru_cache(maxsize=65536)
def _parsed_did_key(did_key: str) -> PublicKey:
    # a stream verifies many commits of each account: its key is parsed once
    return parse_multikey(did_key.removeprefix(DID_KEY_PREFIX))


def _public_key(curve: Curve, point: bytes) -> PublicKey:
    if len(point) == 65 and point[0] == 4:  # uncompressed: accepted, kept compressed
        point = _loaded(curve, point).public_bytes(_COMPRESSED_ENCODING, _COMPRESSED_FORMAT)
    if len(point) != 33 or point[0] not in (2, 3):
        raise InvalidKey(f"{curve} public key is not a compressed point ({len(point)} bytes)")
    # raises InvalidKey when the point is not on the curve; libsecp256k1 checks a k256
    # point in a sixth of the time OpenSSL takes, and keeps it for verifying
    if curve is Curve.K256:
        _secp256k1(point)
    else:
        _loaded(curve, point)
    return PublicKey(curve, point)


@functools.lru_cache(maxsize=4096)
def _loaded(curve: Curve, point: bytes) -> ec.EllipticCurvePublicKey:
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(_CURVES[curve], point)
    except ValueError:
        raise InvalidKey(f"not a point on {curve}") from None


def verify(key: PublicKey, message: bytes, signature: bytes) -> bool:
    """Whether `signature` (64-byte low-S `r‖s`) signs sha256(`message`) with `key`."""
    if len(signature) != 64:
        return False
    r = int.from_bytes(signature[:32])
    s = int.from_bytes(signature[32:])
    order = _ORDER[key.curve]
    if not (0 < r < order and 0 < s <= order // 2):
        return False
    der = encode_dss_signature(r, s)
    if key.curve is Curve.K256:
        return _secp256k1(key.point).verify(der, message, hasher=_sha256)
    try:
        _loaded(key.curve, key.point).verify(der, message, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return False
    return True


def _sha256(message: bytes) -> bytes:
    return hashlib.sha256(message).digest()


@functools.lru_cache(maxsize=4096)
def _secp256k1(point: bytes) -> coincurve.PublicKey:
    try:
        return coincurve.PublicKey(point)
    except ValueError:
        raise InvalidKey(f"not a point on {Curve.K256}") from None


def verify_signature(did_key: str, message: bytes, signature: bytes) -> bool:
    """Whether `signature` signs `message` with the key `did_key` (did:key or multikey).

    Raises InvalidKey if `did_key` is not a key of a supported curve."""
    return verify(parse_did_key(did_key), message, signature)


def is_low_s(curve: Curve, signature: bytes) -> bool:
    return len(signature) == 64 and int.from_bytes(signature[32:]) <= _ORDER[curve] // 2


class Keypair:
    """A private key that signs the atproto way (for the simulated network and tests)."""

    def __init__(self, curve: Curve, private: ec.EllipticCurvePrivateKey) -> None:
        self.curve = curve
        self._private = private
        point = private.public_key().public_bytes(_COMPRESSED_ENCODING, _COMPRESSED_FORMAT)
        self.public = PublicKey(curve, point)

    @classmethod
    def from_private_bytes(cls, curve: Curve, secret: bytes) -> Keypair:
        return cls(curve, ec.derive_private_key(int.from_bytes(secret), _CURVES[curve]))

    @classmethod
    def from_seed(cls, curve: Curve, seed: str) -> Keypair:
        """A deterministic key: the same seed always gives the same key."""
        digest = int.from_bytes(hashlib.sha256(seed.encode()).digest())
        return cls(curve, ec.derive_private_key(1 + digest % (_ORDER[curve] - 1), _CURVES[curve]))

    @property
    def did_key(self) -> str:
        return self.public.did_key

    def sign(self, message: bytes) -> bytes:
        """The 64-byte low-S `r‖s` signature of sha256(`message`) (deterministic, RFC 6979,
        on secp256k1)."""
        if self.curve is Curve.K256:
            secret = self._private.private_numbers().private_value.to_bytes(32)
            der = coincurve.PrivateKey(secret).sign(message, hasher=_sha256)
            r, s = decode_dss_signature(der)
        else:
            r, s = decode_dss_signature(self._private.sign(message, ec.ECDSA(hashes.SHA256())))
        order = _ORDER[self.curve]
        if s > order // 2:
            s = order - s
        return r.to_bytes(32) + s.to_bytes(32)


def high_s(curve: Curve, signature: bytes) -> bytes:
    """The same signature in its high-S form: valid ECDSA, refused by atproto."""
    s = int.from_bytes(signature[32:])
    return signature[:32] + (_ORDER[curve] - s).to_bytes(32)

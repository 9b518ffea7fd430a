"""CIDs as atproto uses them: CIDv1, dag-cbor or raw, sha-256; bytes <-> `bafy...` strings."""

from __future__ import annotations

import base64
import hashlib

import libipld

DAG_CBOR = 0x71
RAW = 0x55
SHA2_256 = 0x12
# CIDv1 + dag-cbor + sha2-256 + 32-byte digest: the prefix of nearly every repo block.
DAG_CBOR_SHA256_PREFIX = bytes([0x01, DAG_CBOR, SHA2_256, 0x20])


def cid_to_str(cid: bytes) -> str:
    """Multibase base32 (lower, unpadded) string of a binary CID, e.g. `bafyrei...`."""
    return libipld.encode_cid(cid)


def cid_from_str(text: str) -> bytes:
    """Binary CID from its base32 multibase string."""
    if not text.startswith("b"):
        raise ValueError(f"unsupported multibase prefix in CID {text[:20]!r}")
    body = text[1:].upper()
    return base64.b32decode(body + "=" * (-len(body) % 8))


def cid_for_block(block: bytes, codec: int = DAG_CBOR) -> bytes:
    """The CIDv1 (sha-256) of a block."""
    return bytes([0x01, codec, SHA2_256, 0x20]) + hashlib.sha256(block).digest()


def block_matches_cid(cid: bytes, block: bytes) -> bool:
    """True when `block` hashes to `cid` (sha-256 CIDs only; other hashes are rejected)."""
    if len(cid) != 36 or cid[2] != SHA2_256 or cid[3] != 0x20:
        return False
    return hashlib.sha256(block).digest() == cid[4:]


def is_cid_str(text: str) -> bool:
    """True for a base32 (`b…`) CIDv1 string with a sha-256 digest, as atproto commits use."""
    try:
        cid = cid_from_str(text)
    except (ValueError, TypeError):
        return False
    return len(cid) == 36 and cid[0] == 0x01 and cid[2] == SHA2_256 and cid[3] == 0x20

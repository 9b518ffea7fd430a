"""CAR v1 files: split into (CID -> block bytes) without decoding, and write them.

Blocks are kept as raw bytes so that every block can be checked against its CID and
records can be decoded with links and bytes kept apart.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import libipld

from skyfill.atproto.cid import DAG_CBOR_SHA256_PREFIX
from skyfill.atproto.exceptions import InvalidRepo, RepoFault

MALFORMED = RepoFault.MALFORMED_CAR


@dataclass(slots=True)
class Car:
    """A parsed CAR: its root CIDs and its blocks by binary CID."""

    roots: list[bytes]
    blocks: dict[bytes, bytes]


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = 0
    shift = 0
    while True:
        if pos >= len(data):
            raise InvalidRepo("truncated CAR: varint runs past the end of the data", MALFORMED)
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise InvalidRepo("malformed CAR: varint too long", MALFORMED)


def _cid_length(data: bytes, pos: int) -> int:
    """Length in bytes of the binary CIDv1 starting at `pos`."""
    if data[pos : pos + 4] == DAG_CBOR_SHA256_PREFIX:
        return 36
    version, p = _varint(data, pos)
    if version != 1:
        raise InvalidRepo(f"malformed CAR: unsupported CID version {version}", MALFORMED)
    _codec, p = _varint(data, p)
    _hash_code, p = _varint(data, p)
    digest_len, p = _varint(data, p)
    return p + digest_len - pos


# The header of nearly every CAR: its length (58), then `{"roots": [root], "version": 1}`
# with one DAG-CBOR sha-256 CID as root (tag 42 of 37 bytes: 0x00, then the CID's 36).
_BEFORE_ROOT = b"\x3a\xa2eroots\x81\xd8\x2aX\x25\x00"
_ROOT_AT = len(_BEFORE_ROOT)
_USUAL_HEAD = _BEFORE_ROOT + DAG_CBOR_SHA256_PREFIX
_USUAL_TAIL = b"\x67version\x01"
_ROOT_END = _ROOT_AT + 36
_USUAL_END = _ROOT_END + len(_USUAL_TAIL)


def _read_header(data: bytes) -> tuple[list[bytes], int]:
    # (bytes slices compare faster than startswith with an offset, which parses arguments)
    if data[: _ROOT_AT + 4] == _USUAL_HEAD and data[_ROOT_END:_USUAL_END] == _USUAL_TAIL:
        return [data[_ROOT_AT:_ROOT_END]], _USUAL_END  # what the decoder below would read
    header_len, pos = _varint(data, 0)
    end = pos + header_len
    if header_len == 0 or end > len(data):
        raise InvalidRepo("truncated CAR: header runs past the end of the data", MALFORMED)
    try:
        header = libipld.decode_dag_cbor(data[pos:end])
    except Exception as exc:
        raise InvalidRepo(f"malformed CAR header: {exc}", MALFORMED) from None
    if not isinstance(header, dict) or header.get("version") != 1:
        raise InvalidRepo("malformed CAR header: not a CAR v1", MALFORMED)
    roots = header.get("roots")
    if not isinstance(roots, list) or not roots or not all(isinstance(r, bytes) for r in roots):
        raise InvalidRepo("malformed CAR header: no root CID", MALFORMED)
    return roots, end


def read_car(data: bytes) -> Car:
    """Split CAR v1 bytes into roots and blocks. Raises InvalidRepo if malformed/truncated."""
    if not data:
        raise InvalidRepo("empty CAR", MALFORMED)
    roots, pos = _read_header(data)
    blocks: dict[bytes, bytes] = {}
    size = len(data)
    prefix = DAG_CBOR_SHA256_PREFIX
    while pos < size:
        # Inline fast paths for 1- and 2-byte section lengths (nearly every block).
        first = data[pos]
        if first < 0x80:
            section_len, start = first, pos + 1
        elif pos + 1 < size and data[pos + 1] < 0x80:
            section_len, start = (first & 0x7F) | (data[pos + 1] << 7), pos + 2
        else:
            section_len, start = _varint(data, pos)
        end = start + section_len
        if end > size:
            raise InvalidRepo(
                f"truncated CAR: block at byte {pos} runs past the end of the data", MALFORMED
            )
        cid_len = 36 if data[start : start + 4] == prefix else _cid_length(data, start)
        if cid_len >= section_len:
            raise InvalidRepo(f"malformed CAR: section at byte {pos} has no block data", MALFORMED)
        blocks[data[start : start + cid_len]] = data[start + cid_len : end]
        pos = end
    return Car(roots=roots, blocks=blocks)


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def write_car(roots: list[bytes], blocks: Iterable[tuple[bytes, bytes]]) -> bytes:
    """Serialize roots and (CID, block) pairs as CAR v1 bytes."""
    header = libipld.encode_dag_cbor({"version": 1, "roots": roots})
    parts = [_encode_varint(len(header)), header]
    for cid, block in blocks:
        parts.append(_encode_varint(len(cid) + len(block)))
        parts.append(cid)
        parts.append(block)
    return b"".join(parts)

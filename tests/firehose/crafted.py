"""Crafted streams: a recording copied with chosen frames replaced or inserted, and the
bad frames to put there (garbage, oversized, an unknown type, `#info OutdatedCursor`, a
commit with a wrong signature, a commit whose record block does not match its CID).

A frame is a DAG-CBOR header `{op, t}` followed by a DAG-CBOR body (cbrrr decodes and
re-encodes them byte for byte). An inserted frame takes, in frames.idx, the seq of the
frame that follows it (of the last frame at the end), so a consumer resuming at the seq
before it still receives it.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import cbrrr

from tests.firehose.recording import LINKED, Frame, Recording, read_frames, write_frames

OVERSIZE = 5 * 1024 * 1024 + 4096
"""Just over the 5 MB a consumer should accept for one frame."""
OUTDATED_MESSAGE = "Requested cursor exceeded limit. Possibly missing events"


class CraftError(ValueError):
    """A frame cannot be crafted as asked (not a commit, no record block...)."""


class Where(StrEnum):
    REPLACE = "replace"
    BEFORE = "before"
    AFTER = "after"


@dataclass(frozen=True)
class Edit:
    """Put `message` in place of (or before, or after) the frame with seq `seq`."""

    seq: int
    message: bytes
    where: Where = Where.REPLACE


# -- frames -------------------------------------------------------------------------------


def encode_frame(header: dict[str, Any], body: dict[str, Any]) -> bytes:
    return cbrrr.encode_dag_cbor(header) + cbrrr.encode_dag_cbor(body)


def decode_frame(message: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    """(header, body); raises CraftError unless the message is exactly two maps."""
    try:
        parts = list(cbrrr.decode_multi_dag_cbor_in_violation_of_the_spec(message))
    except Exception as exc:
        raise CraftError(f"not two DAG-CBOR values: {exc}") from None
    if len(parts) != 2 or not all(isinstance(p, dict) for p in parts):
        raise CraftError(f"expected header and body maps, got {len(parts)} values")
    header, body = parts
    assert isinstance(header, dict) and isinstance(body, dict)
    return header, body


def frame_type(message: bytes) -> str:
    """`#commit`, `#identity`... or `error` (op -1)."""
    header, _ = decode_frame(message)
    return "error" if header.get("op") == -1 else str(header.get("t"))


def garbage_frame(size: int = 64, seed: int = 0) -> bytes:
    """Bytes that are not DAG-CBOR: 0xff (a CBOR "break" outside any item) then noise."""
    return b"\xff" + random.Random(seed).randbytes(size - 1)


def oversized_frame(template: bytes, size: int = OVERSIZE) -> bytes:
    """`template` (a well-formed frame) with its body padded by a `padding` byte string
    until the whole message is at least `size` bytes."""
    header, body = decode_frame(template)
    padding = max(0, size - len(template))
    return encode_frame(header, {**body, "padding": bytes(padding)})


def unknown_type_frame(seq: int, kind: str = "#foo") -> bytes:
    return encode_frame({"op": 1, "t": kind}, {"seq": seq, "time": "2025-10-01T00:00:00.000Z"})


def outdated_cursor_frame(message: str = OUTDATED_MESSAGE) -> bytes:
    """`#info OutdatedCursor`, as the reference PDS sends it before its oldest kept event."""
    return encode_frame({"op": 1, "t": "#info"}, {"name": "OutdatedCursor", "message": message})


def error_frame(error: str, message: str) -> bytes:
    return encode_frame({"op": -1}, {"error": error, "message": message})


# -- CAR slices ---------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _cid_length(data: bytes, pos: int) -> int:
    """Length of the binary CIDv1 at `pos` (version, codec, multihash code, length, digest)."""
    start = pos
    for _ in range(3):
        _, pos = _varint(data, pos)
    digest, pos = _varint(data, pos)
    return pos + digest - start


def split_car(car: bytes) -> tuple[dict[str, Any], list[tuple[bytes, bytes]]]:
    """(CAR header, [(binary CID, block bytes)]) in file order."""
    size, pos = _varint(car, 0)
    header = cbrrr.decode_dag_cbor(car[pos : pos + size])
    assert isinstance(header, dict)
    pos += size
    blocks = []
    while pos < len(car):
        size, pos = _varint(car, pos)
        cid_len = _cid_length(car, pos)
        blocks.append((car[pos : pos + cid_len], car[pos + cid_len : pos + size]))
        pos += size
    return header, blocks


def join_car(header: dict[str, Any], blocks: Sequence[tuple[bytes, bytes]]) -> bytes:
    encoded = cbrrr.encode_dag_cbor(header)
    parts = [_encode_varint(len(encoded)), encoded]
    for cid, data in blocks:
        parts += [_encode_varint(len(cid) + len(data)), cid, data]
    return b"".join(parts)


def cid_matches(cid: bytes, data: bytes) -> bool:
    """Whether a sha256 CID (`01 <codec> 12 20 <digest>`) is the hash of `data`."""
    return cid[-32:] == hashlib.sha256(data).digest()


def _commit_body(message: bytes) -> tuple[dict[str, Any], dict[str, Any]]:
    header, body = decode_frame(message)
    if header.get("t") != "#commit":
        raise CraftError(f"not a #commit frame: {header}")
    return header, body


def bad_signature_frame(message: bytes, bit: int = 0) -> bytes:
    """The commit with one bit of its `sig` flipped. Its commit block is re-encoded and
    its CID recomputed (the CAR root and the body's `commit` follow), so every CID
    matches and only the signature is wrong."""
    header, body = _commit_body(message)
    car_header, blocks = split_car(body["blocks"])
    old = body["commit"]
    assert isinstance(old, cbrrr.CID)
    out = []
    new = old
    for cid, data in blocks:
        if cid == old.cid_bytes:
            commit = cbrrr.decode_dag_cbor(data)
            assert isinstance(commit, dict)
            signature = commit.get("sig")
            assert isinstance(signature, bytes), "an unsigned commit"
            sig = bytearray(signature)
            sig[bit // 8] ^= 1 << (bit % 8)
            data = cbrrr.encode_dag_cbor({**commit, "sig": bytes(sig)})
            new = cbrrr.CID.cidv1_dag_cbor_sha256_32_from(data)
            cid = new.cid_bytes
        out.append((cid, data))
    if new == old:
        raise CraftError("the commit block is not in the frame's CAR")
    car = join_car({**car_header, "roots": [new]}, out)
    return encode_frame(header, {**body, "commit": new, "blocks": car})


def cid_mismatch_frame(message: bytes) -> bytes:
    """The commit with the block of its first created or updated record changed (a
    `tampered` field added) under its old CID."""
    header, body = _commit_body(message)
    targets = {op["cid"].cid_bytes for op in body["ops"] if op.get("cid") is not None}
    car_header, blocks = split_car(body["blocks"])
    for i, (cid, data) in enumerate(blocks):
        if cid in targets:
            record = cbrrr.decode_dag_cbor(data)
            assert isinstance(record, dict)
            blocks[i] = (cid, cbrrr.encode_dag_cbor({**record, "tampered": True}))
            return encode_frame(header, {**body, "blocks": join_car(car_header, blocks)})
    raise CraftError("the commit carries no record block")


def find_frame(frames: Sequence[Frame], kind: str, nth: int = 0, min_ops: int = 0) -> Frame:
    """The `nth` frame of type `kind` (for a `#commit`: with at least `min_ops` ops)."""
    seen = 0
    for frame in frames:
        header, body = decode_frame(frame.message)
        if header.get("t") != kind or len(body.get("ops") or ()) < min_ops:
            continue
        if seen == nth:
            return frame
        seen += 1
    raise CraftError(f"no {kind} frame #{nth} with {min_ops}+ ops")


# -- recordings ---------------------------------------------------------------------------


def apply_edits(frames: Sequence[Frame], edits: Sequence[Edit]) -> list[Frame]:
    by_seq: dict[int, list[Edit]] = {}
    for edit in edits:
        by_seq.setdefault(edit.seq, []).append(edit)
    missing = set(by_seq) - {frame.seq for frame in frames}
    if missing:
        raise CraftError(f"no frame with seq {sorted(missing)}")
    out: list[Frame] = []
    for i, frame in enumerate(frames):
        following = frames[i + 1].seq if i + 1 < len(frames) else frame.seq
        mine = by_seq.get(frame.seq, [])
        out += [Frame(frame.seq, e.message) for e in mine if e.where is Where.BEFORE]
        replaced = [e for e in mine if e.where is Where.REPLACE]
        out.append(Frame(frame.seq, replaced[-1].message) if replaced else frame)
        out += [Frame(following, e.message) for e in mine if e.where is Where.AFTER]
    return out


def craft_recording(source: Recording, dst: Path, edits: Sequence[Edit]) -> Recording:
    """A new recording in `dst`: `source`'s frames with `edits` applied, its other files
    copied (CARs linked). Its meta's `frames` counts the new frames; `head_seq` stays the
    last seq. The truth is `source`'s: a consumer that skips or refuses a bad commit must
    reach it by re-fetching the repo (getRepo serves the final state)."""
    frames = apply_edits(read_frames(source.path), edits)
    dst.mkdir(parents=True, exist_ok=True)
    write_frames(dst, frames)
    src = source.path.resolve()
    for name in LINKED:
        if name not in ("frames.bin", "frames.idx") and (src / name).exists():
            (dst / name).symlink_to(src / name)
    shutil.copytree(src / "plc", dst / "plc")
    shutil.copy(src / "truth.json", dst / "truth.json")
    meta = {**source.meta, "frames": len(frames), "crafted": [e.seq for e in edits]}
    (dst / "meta.json").write_text(json.dumps(meta, indent=1))
    return Recording.open(dst)

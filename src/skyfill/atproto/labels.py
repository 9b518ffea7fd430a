"""Labels: the frames of `com.atproto.label.subscribeLabels` and each label's signature.

The stream has subscribeRepos's frame format (a DAG-CBOR header `{op, t}`, then a body;
`op: -1` an error frame such as `FutureCursor`; `#info`), with one event type of its
own: `#labels {seq, labels: [label, ...]}`. A label is
`{ver?, src, uri, cid?, val, neg?, cts, exp?, sig}`: `src` (the labeler's DID) says
that `val` applies to `uri` (an account's DID or an at:// URI, at the version `cid` if
given) since `cts`, until `exp` if given; `neg: true` takes an earlier such label back.

`sig` signs the DAG-CBOR encoding of the label without `sig` (every other field exactly
as sent, `ver` included), ECDSA over sha256 with the key of the `#atproto_label`
verification method of `src`'s DID document. Nothing here does I/O: which key, and what
a failure means, is the follower's business (`skyfill.labels.checker`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeVar

import libipld

from skyfill.atproto.crypto import InvalidKey, verify_signature
from skyfill.atproto.stream.frames import (
    MAX_FRAME_BYTES,
    ErrorFrame,
    FrameError,
    InfoFrame,
    UnknownFrame,
    decode_frame,
)
from skyfill.atproto.syntax import (
    MAX_AT_URI_LENGTH,
    is_valid_at_uri,
    is_valid_cid,
    is_valid_did,
    parse_datetime,
)

LABELS = "#labels"
MAX_VAL_BYTES = 128
"""The Lexicon's limit on a label's value (`maxLength: 128`)."""
T = TypeVar("T")
_URI = re.compile(r"[a-z][a-z0-9+.-]*:\S+")
"""Any URI (the Lexicon `uri` format): at:// and did: ones are also checked strictly."""


@dataclass(frozen=True, slots=True)
class Label:
    """One label as the labeler sent it (`body`: its map, for the signature)."""

    src: str
    uri: str
    cid: str | None
    val: str
    neg: bool
    cts: str
    exp: str | None
    sig: bytes
    ver: int | None
    body: dict
    """The label's map as decoded, `sig` included."""


@dataclass(frozen=True, slots=True)
class LabelsFrame:
    seq: int
    labels: tuple[Label, ...]
    invalid: tuple[str, ...] = ()
    """Why each label that could not be read was refused (it is not in `labels`)."""


StreamFrame = LabelsFrame | InfoFrame | ErrorFrame | UnknownFrame


class InvalidLabel(ValueError):
    """A label map that breaks the Lexicon (a field missing, of a wrong type or syntax)."""


def decode_labels_frame(message: bytes, max_bytes: int = MAX_FRAME_BYTES) -> StreamFrame:
    """The frame in one message of a label stream; raises FrameError (with its seq when
    it could be read) if it is not a valid one. An event of another type is an
    UnknownFrame (skipped by the follower)."""
    frame = decode_frame(message, max_bytes)
    if isinstance(frame, InfoFrame | ErrorFrame):
        return frame
    if not isinstance(frame, UnknownFrame):  # a subscribeRepos event: not a label stream's
        return UnknownFrame(type=type(frame).__name__, seq=getattr(frame, "seq", None))
    if frame.type != LABELS:
        return frame
    seq = frame.seq
    if seq is None:
        raise FrameError("#labels body has no seq")
    labels = frame.body.get("labels")
    if type(labels) is not list:
        raise FrameError("#labels body: labels is not a list", seq)
    read: list[Label] = []
    invalid: list[str] = []
    for i, item in enumerate(labels):
        try:
            read.append(read_label(item))
        except InvalidLabel as exc:
            invalid.append(f"labels[{i}]: {exc}")
    return LabelsFrame(seq, tuple(read), tuple(invalid))


def read_label(body: object) -> Label:
    """A label from its decoded map; raises InvalidLabel."""
    if type(body) is not dict:
        raise InvalidLabel("not a map")
    src = _text(body, "src")
    if not is_valid_did(src):
        raise InvalidLabel(f"src is not a DID: {src[:80]!r}")
    uri = _text(body, "uri")
    if not _is_uri(uri):
        raise InvalidLabel(f"uri is not a URI: {uri[:80]!r}")
    cid = _optional(body, "cid", str)
    if cid is not None and not is_valid_cid(cid):
        raise InvalidLabel(f"cid is not a CID: {cid[:80]!r}")
    val = _text(body, "val")
    if not val or len(val.encode()) > MAX_VAL_BYTES:
        raise InvalidLabel(f"val is empty or longer than {MAX_VAL_BYTES} bytes")
    ver = _optional(body, "ver", int)
    neg = _optional(body, "neg", bool)
    return Label(
        src=src,
        uri=uri,
        cid=cid,
        val=val,
        neg=bool(neg),
        cts=_datetime(body, "cts"),
        exp=_datetime(body, "exp") if body.get("exp") is not None else None,
        sig=_bytes(body, "sig"),
        ver=ver,
        body=body,
    )


def signed_bytes(label: Label) -> bytes:
    """What `sig` signs: the label's map without `sig`, as DAG-CBOR."""
    return libipld.encode_dag_cbor({k: v for k, v in label.body.items() if k != "sig"})


def verify_label(label: Label, did_key: str) -> bool:
    """Whether the label's `sig` signs it with `did_key` (a did:key or multikey); False
    also when the key is not one of a supported curve."""
    try:
        return verify_signature(did_key, signed_bytes(label), label.sig)
    except InvalidKey:
        return False


def _is_uri(value: str) -> bool:
    if len(value) > MAX_AT_URI_LENGTH or _URI.fullmatch(value) is None:
        return False
    if value.startswith("at://"):
        return is_valid_at_uri(value)
    if value.startswith("did:"):
        return is_valid_did(value)
    return True


def _text(body: dict, name: str) -> str:
    value = body.get(name)
    if type(value) is not str:
        raise InvalidLabel(f"{name} is {_what(value)}, not text")
    return value


def _bytes(body: dict, name: str) -> bytes:
    value = body.get(name)
    if type(value) is not bytes:
        raise InvalidLabel(f"{name} is {_what(value)}, not bytes")
    return value


def _optional(body: dict, name: str, kind: type[T]) -> T | None:
    value = body.get(name)
    if value is not None and type(value) is not kind:
        raise InvalidLabel(f"{name} is {_what(value)}, not {kind.__name__}")
    return value


def _datetime(body: dict, name: str) -> str:
    value = _text(body, name)
    if parse_datetime(value) is None:
        raise InvalidLabel(f"{name} is not a datetime: {value[:80]!r}")
    return value


def _what(value: object) -> str:
    return "missing" if value is None else type(value).__name__

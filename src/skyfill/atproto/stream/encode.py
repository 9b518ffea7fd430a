"""Encoding frames of `com.atproto.sync.subscribeRepos`: `encode_frame` is the inverse of
`frames.decode_frame`, for test servers and crafted streams."""

from __future__ import annotations

import cbrrr

from skyfill.atproto.stream.frames import (
    OP_ERROR,
    OP_EVENT,
    AccountFrame,
    CommitFrame,
    ErrorFrame,
    Frame,
    IdentityFrame,
    InfoFrame,
    RepoOp,
    SyncFrame,
    UnknownFrame,
)


def encode_frame(frame: Frame) -> bytes:
    """The websocket message of a frame (the inverse of `decode_frame`).

    An UnknownFrame's body is written as it is (bytes stay bytes: libipld decodes links
    to bytes, so a decoded unknown body does not re-encode its links as links)."""
    header, body = _header_and_body(frame)
    return cbrrr.encode_dag_cbor(header) + cbrrr.encode_dag_cbor(body)


def _header_and_body(frame: Frame) -> tuple[dict, dict]:
    match frame:
        case ErrorFrame(error=error, message=message):
            return {"op": OP_ERROR}, _without_none({"error": error, "message": message})
        case InfoFrame(name=name, message=message):
            return _event("#info"), _without_none({"name": name, "message": message})
        case CommitFrame():
            return _event("#commit"), _commit_body(frame)
        case SyncFrame():
            body = {"seq": frame.seq, "did": frame.did, "rev": frame.rev}
            return _event("#sync"), {**body, "blocks": frame.blocks, "time": frame.time}
        case IdentityFrame(seq=seq, did=did, time=time, handle=handle):
            return _event("#identity"), _without_none(
                {"seq": seq, "did": did, "time": time, "handle": handle}
            )
        case AccountFrame(seq=seq, did=did, active=active, time=time, status=status):
            return _event("#account"), _without_none(
                {"seq": seq, "did": did, "active": active, "time": time, "status": status}
            )
        case UnknownFrame(type=kind, body=body):
            return _event(kind), body


def _event(kind: str) -> dict:
    return {"op": OP_EVENT, "t": kind}


def _without_none(body: dict) -> dict:
    return {key: value for key, value in body.items() if value is not None}


def _commit_body(frame: CommitFrame) -> dict:
    body = {
        "seq": frame.seq,
        "repo": frame.repo,
        "rev": frame.rev,
        "since": frame.since,
        "commit": cbrrr.CID(frame.commit),
        "blocks": frame.blocks,
        "ops": [_op_body(op) for op in frame.ops],
        "time": frame.time,
        "tooBig": frame.too_big,
        "rebase": frame.rebase,
        "blobs": [],
    }
    if frame.prev_data is not None:
        body["prevData"] = cbrrr.CID(frame.prev_data)
    return body


def _op_body(op: RepoOp) -> dict:
    body = {
        "action": op.action,
        "path": op.path,
        "cid": None if op.cid is None else cbrrr.CID(op.cid),
    }
    if op.prev is not None:
        body["prev"] = cbrrr.CID(op.prev)
    return body

"""Frames of `com.atproto.sync.subscribeRepos`, decoded from websocket messages.

A message is two DAG-CBOR values back to back: a header `{op, t}` and a body. `op: 1` is
an event whose type `t` is `#commit`, `#sync`, `#identity`, `#account` or `#info`;
`op: -1` is an error frame (`FutureCursor`, `ConsumerTooSlow`, ...) after which the host
closes the connection. A frame that cannot be read raises `FrameError` (with its seq
when the body got that far), never anything else.

`decode_frame` checks each field's type and the syntax of DIDs, revs and CIDs (a link
must be a CIDv1 of DAG-CBOR and sha-256, as every repo block is); whether the commit it
carries is true is `commit.verify_commit`'s question. A `#commit` as hosts send it takes a
fast path (`_usual_commit`: the same checks, inline); anything it declines goes to the
strict reader, which names what is wrong. `peek` reads only an event's type, seq and DID
(hints for work that can start early). `encode.py` holds the inverse, `encode_frame`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import libipld

from skyfill.atproto import fastrepo, slots
from skyfill.atproto.cid import DAG_CBOR_SHA256_PREFIX
from skyfill.atproto.syntax import TID, is_valid_did, is_valid_handle, is_valid_tid

MAX_FRAME_BYTES = 5 * 1024 * 1024
"""Frames larger than this are refused (the spec's limit is ~2 MB of blocks); only their
seq is read, so that the consumer can say which event it skipped."""

OP_EVENT = 1
OP_ERROR = -1
ACTIONS = ("create", "update", "delete")

T = TypeVar("T")


class FrameError(ValueError):
    """A message that is not a well-formed frame; `seq` when it could be read."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message if seq is None else f"seq {seq}: {message}")
        self.seq = seq


@dataclass(frozen=True, slots=True)
class RepoOp:
    action: str
    """`create`, `update` or `delete`."""
    path: str
    """`collection/rkey` (its syntax is checked by `verify_commit`, not here)."""
    cid: bytes | None
    """The record's CID (raw bytes, as in CAR blocks); None for a delete."""
    prev: bytes | None = None
    """The previous record's CID (updates and deletes, sync 1.1); None when not sent."""


@dataclass(frozen=True, slots=True)
class CommitFrame:
    seq: int
    repo: str
    rev: str
    since: str | None
    commit: bytes
    """The commit's CID (raw bytes)."""
    blocks: bytes
    """A CAR slice: the commit, the changed MST nodes, the new records (and proof nodes)."""
    ops: tuple[RepoOp, ...]
    time: str
    prev_data: bytes | None = None
    """The MST root before this commit (raw CID); None when the host does not send it."""
    too_big: bool = False
    rebase: bool = False


@dataclass(frozen=True, slots=True)
class SyncFrame:
    seq: int
    did: str
    rev: str
    blocks: bytes
    """A CAR holding the repo's current commit block."""
    time: str


@dataclass(frozen=True, slots=True)
class IdentityFrame:
    seq: int
    did: str
    time: str
    handle: str | None = None


@dataclass(frozen=True, slots=True)
class AccountFrame:
    seq: int
    did: str
    active: bool
    time: str
    status: str | None = None
    """When inactive: takendown, suspended, deleted, deactivated, desynchronized, throttled."""


@dataclass(frozen=True, slots=True)
class InfoFrame:
    name: str
    """`OutdatedCursor` (the cursor is older than the host keeps), or another name."""
    message: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorFrame:
    error: str
    """`FutureCursor`, `ConsumerTooSlow`, ...: the host closes the stream after it."""
    message: str | None = None


@dataclass(frozen=True, slots=True)
class UnknownFrame:
    """An event of a type this version does not know: counted and skipped."""

    type: str
    seq: int | None = None
    body: dict = field(default_factory=dict)


Frame = (
    CommitFrame | SyncFrame | IdentityFrame | AccountFrame | InfoFrame | ErrorFrame | UnknownFrame
)
SequencedFrame = CommitFrame | SyncFrame | IdentityFrame | AccountFrame


def decode_frame(message: bytes, max_bytes: int = MAX_FRAME_BYTES) -> Frame:
    """The frame in one websocket message; raises FrameError if it is not a valid one."""
    if len(message) > max_bytes:
        raise FrameError(
            f"frame of {len(message)} bytes is larger than {max_bytes}", _seq_of(message)
        )
    try:
        values = libipld.decode_dag_cbor_multi(message)
    except Exception as exc:  # libipld raises ValueError, but a frame is untrusted input
        raise FrameError(f"frame is not DAG-CBOR: {exc}") from None
    if len(values) != 2:
        raise FrameError(f"frame holds {len(values)} DAG-CBOR values, not a header and a body")
    header, body = values
    if type(header) is not dict or type(body) is not dict:
        raise FrameError("frame header or body is not a map")
    op, kind = header.get("op"), header.get("t")
    if kind == "#commit" and op == OP_EVENT and type(op) is int:
        frame = _usual_commit(body)  # raises nothing
        if frame is not None:
            return frame
    if op == OP_ERROR and type(op) is int:
        return _error(_Fields(body, None))
    if op != OP_EVENT or type(op) is not int:
        raise FrameError(f"frame header has op {op!r}, not 1 or -1")
    if type(kind) is not str:
        raise FrameError("event frame header lacks its type t")
    seq = body.get("seq")
    known_seq = seq if type(seq) is int and seq >= 0 else None
    reader = _READERS.get(kind)
    if reader is None:
        return UnknownFrame(type=kind, seq=known_seq, body=body)
    try:
        return reader(_Fields(body, known_seq))
    except FrameError:
        raise
    except Exception as exc:  # a value no check foresaw: still the frame's fault
        raise FrameError(f"{kind} body: {type(exc).__name__}: {exc}", known_seq) from None


class _Fields:
    """Typed reads of a body's fields; each failure is a FrameError naming the field."""

    __slots__ = ("body", "seq")

    def __init__(self, body: dict, seq: int | None) -> None:
        self.body = body
        self.seq = seq

    def fail(self, message: str) -> FrameError:
        return FrameError(message, self.seq)

    def _get(self, name: str, kind: type[T]) -> T:
        value = self.body.get(name)
        if type(value) is not kind:
            raise self.fail(f"{name} is {_what(value)}, not {kind.__name__}")
        return value

    def _optional(self, name: str, kind: type[T]) -> T | None:
        return None if self.body.get(name) is None else self._get(name, kind)

    def natural(self, name: str) -> int:
        value = self._get(name, int)
        if value < 0:
            raise self.fail(f"{name} is negative")
        return value

    def text(self, name: str) -> str:
        return self._get(name, str)

    def opt_text(self, name: str) -> str | None:
        return self._optional(name, str)

    def flag(self, name: str) -> bool:
        return self._get(name, bool)

    def opt_flag(self, name: str, default: bool) -> bool:
        value = self._optional(name, bool)
        return default if value is None else value

    def raw(self, name: str) -> bytes:
        return self._get(name, bytes)

    def cid(self, name: str) -> bytes:
        return self._check_cid(name, self._get(name, bytes))

    def opt_cid(self, name: str) -> bytes | None:
        value = self._optional(name, bytes)
        return None if value is None else self._check_cid(name, value)

    def _check_cid(self, name: str, value: bytes) -> bytes:
        if len(value) != 36 or value[:4] != DAG_CBOR_SHA256_PREFIX:
            raise self.fail(f"{name} is not a DAG-CBOR sha-256 CIDv1")
        return value

    def did(self, name: str) -> str:
        value = self.text(name)
        if not is_valid_did(value):
            raise self.fail(f"{name} is not a DID: {value[:80]!r}")
        return value

    def tid(self, name: str) -> str:
        value = self.text(name)
        if not is_valid_tid(value):
            raise self.fail(f"{name} is not a TID: {value[:80]!r}")
        return value


def _what(value: object) -> str:
    return "missing" if value is None else type(value).__name__


def _commit(fields: _Fields) -> CommitFrame:
    commit = fields.cid("commit")
    since = fields.opt_text("since")
    if since is not None and not is_valid_tid(since):
        raise fields.fail(f"since is not a TID: {since[:80]!r}")
    return CommitFrame(
        seq=fields.natural("seq"),
        repo=fields.did("repo"),
        rev=fields.tid("rev"),
        since=since,
        commit=commit,
        blocks=fields.raw("blocks"),
        ops=_ops(fields),
        time=fields.text("time"),
        prev_data=fields.opt_cid("prevData"),
        # deprecated in sync 1.1; hosts still send them, and may stop
        too_big=fields.opt_flag("tooBig", False),
        rebase=fields.opt_flag("rebase", False),
    )


def _ops(fields: _Fields) -> tuple[RepoOp, ...]:
    ops = fields.body.get("ops")
    if type(ops) is not list:
        raise fields.fail(f"ops is {_what(ops)}, not list")
    decoded: list[RepoOp] = []
    for i, op in enumerate(ops):
        if type(op) is not dict:
            raise fields.fail(f"ops[{i}] is {_what(op)}, not a map")
        decoded.append(_op(_Fields(op, fields.seq), i))
    return tuple(decoded)


def _op(fields: _Fields, index: int) -> RepoOp:
    action = fields.text("action")
    if action not in ACTIONS:
        raise fields.fail(f"ops[{index}] has action {action[:20]!r}")
    cid = fields.opt_cid("cid")
    if (cid is None) != (action == "delete"):
        raise fields.fail(f"ops[{index}]: a {action} must {'not ' * (cid is not None)}have a cid")
    return RepoOp(
        action=action,
        path=fields.text("path"),
        cid=cid,
        prev=fields.opt_cid("prev"),
    )


def _usual_commit(body: dict) -> CommitFrame | None:
    """The fast path of `_commit`: the same checks, inline, on a commit as hosts send it
    (about nine in ten events); None for anything else, for `_commit` to decide and name."""
    get = body.get
    seq, repo, rev, since = get("seq"), get("repo"), get("rev"), get("since")
    commit, blocks, time, prev_data = get("commit"), get("blocks"), get("time"), get("prevData")
    too_big, rebase = get("tooBig"), get("rebase")
    if (
        type(seq) is not int
        or seq < 0
        or type(repo) is not str
        or not is_valid_did(repo)
        or type(rev) is not str
        or _match_tid(rev) is None
        or (since is not None and (type(since) is not str or _match_tid(since) is None))
        or not _is_link(commit)
        or type(blocks) is not bytes
        or type(time) is not str
        or (prev_data is not None and not _is_link(prev_data))
        or (too_big is not None and type(too_big) is not bool)
        or (rebase is not None and type(rebase) is not bool)
    ):
        return None
    ops = _usual_ops(get("ops"))
    if ops is None:
        return None
    frame = slots.new(CommitFrame)  # CommitFrame(seq, ...), without its per-field __setattr__
    _set_seq(frame, seq)
    _set_repo(frame, repo)
    _set_rev(frame, rev)
    _set_since(frame, since)
    _set_commit(frame, commit)
    _set_blocks(frame, blocks)
    _set_ops(frame, ops)
    _set_time(frame, time)
    _set_prev_data(frame, prev_data)
    _set_too_big(frame, too_big is True)
    _set_rebase(frame, rebase is True)
    return frame


def _usual_ops(ops: object) -> tuple[RepoOp, ...] | None:
    """`_ops` inline (see `_usual_commit`); None where `_ops` may object."""
    if type(ops) is not list:
        return None
    decoded: list[RepoOp] = []
    for op in ops:
        if type(op) is not dict:
            return None
        get = op.get
        action, path, cid, prev = get("action"), get("path"), get("cid"), get("prev")
        if type(path) is not str or (prev is not None and not _is_link(prev)):
            return None
        if action == "delete":
            if cid is not None:
                return None
        elif action not in _PUTS or not _is_link(cid):
            return None
        repo_op = slots.new(RepoOp)  # RepoOp(action, path, cid, prev), as above
        _set_action(repo_op, action)
        _set_path(repo_op, path)
        _set_cid(repo_op, cid)
        _set_prev(repo_op, prev)
        decoded.append(repo_op)
    return tuple(decoded)


_match_tid = TID.fullmatch
_PUTS = ("create", "update")


def _is_link(value: object) -> bool:
    """`_Fields.cid`'s check: a 36-byte CIDv1 of DAG-CBOR and sha-256."""
    return type(value) is bytes and len(value) == 36 and value[:4] == DAG_CBOR_SHA256_PREFIX


# fmt: off
(
    _set_seq, _set_repo, _set_rev, _set_since, _set_commit, _set_blocks, _set_ops, _set_time,
    _set_prev_data, _set_too_big, _set_rebase,
) = slots.setters(
    CommitFrame, "seq", "repo", "rev", "since", "commit", "blocks", "ops", "time", "prev_data",
    "too_big", "rebase",
)
# fmt: on
_set_action, _set_path, _set_cid, _set_prev = slots.setters(RepoOp, "action", "path", "cid", "prev")


def _sync(fields: _Fields) -> SyncFrame:
    return SyncFrame(
        seq=fields.natural("seq"),
        did=fields.did("did"),
        rev=fields.tid("rev"),
        blocks=fields.raw("blocks"),
        time=fields.text("time"),
    )


def _identity(fields: _Fields) -> IdentityFrame:
    handle = fields.opt_text("handle")
    if handle is not None and not is_valid_handle(handle):
        raise fields.fail(f"handle is not a handle: {handle[:80]!r}")
    return IdentityFrame(
        seq=fields.natural("seq"), did=fields.did("did"), time=fields.text("time"), handle=handle
    )


def _account(fields: _Fields) -> AccountFrame:
    return AccountFrame(
        seq=fields.natural("seq"),
        did=fields.did("did"),
        active=fields.flag("active"),
        time=fields.text("time"),
        status=fields.opt_text("status"),
    )


def _info(fields: _Fields) -> InfoFrame:
    return InfoFrame(name=fields.text("name"), message=fields.opt_text("message"))


def _error(fields: _Fields) -> ErrorFrame:
    return ErrorFrame(error=fields.text("error"), message=fields.opt_text("message"))


_READERS: dict[str, Callable[[_Fields], Frame]] = {
    "#commit": _commit,
    "#sync": _sync,
    "#identity": _identity,
    "#account": _account,
    "#info": _info,
}


def _seq_of(message: bytes) -> int | None:
    """The seq of a frame that is refused whole, if its body can be read at all."""
    try:
        values = libipld.decode_dag_cbor_multi(message)
    except Exception:
        return None
    body = values[1] if len(values) == 2 else None
    seq = body.get("seq") if type(body) is dict else None
    return seq if type(seq) is int and seq >= 0 else None


_peek_frame = fastrepo.peek_frame()
"""The C module's `peek_frame`, or None (not built, or SKYFILL_PURE_PYTHON=1)."""


def peek(message: bytes) -> tuple[str | None, int | None, str | None]:
    """An event frame's type, seq and DID (`repo` of a `#commit`, `did` of the others), read
    without checking anything else: hints for work that can start before the frame is
    decoded (None for what is not there or not of the expected type). The C module reads
    them without building the body (~10× faster); a frame it declines is read here. It
    checks only what it reads, so it may give hints for a frame that libipld refuses
    (unsorted keys, bad UTF-8 in a value it skips) where libipld gives none: the frame's
    decoding refuses it all the same, with its seq."""
    if _peek_frame is not None:
        hints = _peek_frame(message)
        if hints is not None:
            return hints
    return _peek_python(message)


def _peek_python(message: bytes) -> tuple[str | None, int | None, str | None]:
    try:
        values = libipld.decode_dag_cbor_multi(message)
    except Exception:  # malformed: decode_frame says why, later
        return None, None, None
    if len(values) != 2 or not isinstance(values[0], dict) or not isinstance(values[1], dict):
        return None, None, None
    kind, body = values[0].get("t"), values[1]
    seq, did = body.get("seq"), body.get("repo", body.get("did"))
    return (
        kind if isinstance(kind, str) else None,
        seq if isinstance(seq, int) and not isinstance(seq, bool) else None,
        did if isinstance(did, str) else None,
    )

"""Frames of `com.atproto.sync.subscribeRepos`, decoded from websocket messages.

A message is two DAG-CBOR values back to back: a header `{op, t}` and a body. `op: 1` is
an event whose type `t` is `#commit`, `#sync`, `#identity`, `#account` or `#info`;
`op: -1` is an error frame (`FutureCursor`, `ConsumerTooSlow`, ...) after which the host
closes the connection. A frame that cannot be read raises `FrameError` (with its seq
when the body got that far), never anything else.
"""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_FRAME_BYTES = 5 * 1024 * 1024
"""Frames larger than this are refused unread (the spec's limit is ~2 MB of blocks)."""


class FrameError(ValueError):
    """A message that is not a well-formed frame; `seq` when it could be read."""

    def __init__(self, message: str, seq: int | None = None) -> None:
        super().__init__(message)
        self.seq = seq


@dataclass(frozen=True, slots=True)
class RepoOp:
    action: str
    """`create`, `update` or `delete`."""
    path: str
    """`collection/rkey`."""
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

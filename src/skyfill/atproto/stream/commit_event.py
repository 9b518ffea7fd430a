"""A `#commit` message read, and its slice checked, in one call to the C module.

The stream's hot path: nine in ten events are commits, and reading one through libipld
(`frames.decode_frame`) then checking it (`commit.verify_commit`) builds every value of
the frame and the slice in Python before most of them are dropped. The C module
(`_fastrepo_event.h`) walks the message's bytes once and builds only what the result
holds. It answers for a plainly valid commit only; `read_commit_event` returns None for
anything else (another event, anything unusual, no C module), which the caller then reads
with `decode_frame` and checks with `verify_commit`, the definitions, which word the
verdict. `tests/atproto/stream/test_commit_event.py` holds the two paths equal.
"""

from __future__ import annotations

from collections.abc import Callable

from skyfill.atproto import fastrepo, slots
from skyfill.atproto.record import MAX_RECORD_BYTES
from skyfill.atproto.stream.commit import CommitDelete, CommitPut, VerifiedCommit, created_at_of
from skyfill.atproto.stream.frames import MAX_FRAME_BYTES, CommitFrame, RepoOp
from skyfill.atproto.syntax import is_valid_collection

_FIELDS: tuple[fastrepo.FieldOrder, ...] = (
    (CommitFrame, ("seq", "repo", "rev", "since", "commit", "blocks", "ops", "time",
                   "prev_data", "too_big", "rebase")),
    (RepoOp, ("action", "path", "cid", "prev")),
    (VerifiedCommit, ("rev", "commit_cid", "data", "puts", "deletes", "proof")),
    (CommitPut, ("action", "collection", "rkey", "cid", "record", "created_at")),
    (CommitDelete, ("collection", "rkey")),
)  # fmt: skip
"""The classes the C module fills, each with its fields in the order it fills them."""


def _bound() -> Callable[..., tuple[CommitFrame, VerifiedCommit | None] | None] | None:
    read = fastrepo.commit_event()
    if read is None:
        return None
    for cls, names in _FIELDS:
        slots.setters(cls, *names)  # all of its fields, or TypeError: a field added later
    frame, op, verified, put, delete = _FIELDS
    fastrepo.bind_commit_types(frame, op, verified, put, delete, created_at_of, "skipped")
    return read


_commit_event = _bound()


def read_commit_event(
    message: bytes, keep_collection: Callable[[str], bool] | None, *, check: bool
) -> tuple[CommitFrame, VerifiedCommit | None] | None:
    """`decode_frame(message)` for a `#commit` event, and with `check`, its
    `verify_commit(frame, None, keep_collection=..., check_proof=False)`, or None (the
    result is then the definitions' to give). The second value is None without `check`,
    for a `tooBig` commit, and for a slice the C module is not sure about."""
    if _commit_event is None or not fastrepo.ENABLED:  # (tests switch ENABLED)
        return None
    return _commit_event(
        message, MAX_FRAME_BYTES, MAX_RECORD_BYTES, is_valid_collection, keep_collection, check
    )

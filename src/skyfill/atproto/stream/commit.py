"""Verifying a `#commit` or `#sync` event and decoding its records, sync 1.1 style.

`verify_commit` checks, in order, each failure an InvalidRepo of its RepoFault kind:
the CAR slice reads (`malformed_car`) and every block hashes to its CID (`cid_mismatch`);
its root is the event's `commit` (`event_mismatch`); the commit block is a version 3 map
(`bad_commit`, `unsupported_version`) of the event's repo (`wrong_did`) at the event's rev
(`event_mismatch`), signed with the key when one is given (`bad_signature`); every op has a
valid repo path, once (`bad_ops`), and each create/update's record is in the slice
(`missing_block`: blocks are looked up by the op's CID, so a present block matches it) and
decodes as the getRepo path decodes it (`record.decode_record`); and, with `prevData` sent
and `check_proof`, undoing the ops on the slice's MST (`mst_edit.invert_ops`: `bad_ops`,
`missing_proof`) gives `prevData` (`prev_data_mismatch`).

What to do with a failure (or a None key) is the caller's policy: the design marks the repo
`desynchronized` and re-fetches it. A `tooBig` commit (deprecated; its slice may be empty)
fails like any other whose slice is incomplete.

A commit takes a fast path first (`_verified_fast`): the C module (`_fastrepo_slice.h`)
checks the slice's blocks, writes the records' JSON and inverts the ops, and answers only
for a commit that is plainly valid. Anything else, a failure included, goes through the
Python code below, which is the definition and words the verdict.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from skyfill.atproto import fastrepo, slots
from skyfill.atproto.car import read_car
from skyfill.atproto.cid import SHA2_256, block_matches_cid, cid_to_str
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.mst_edit import invert_ops
from skyfill.atproto.record import MAX_RECORD_BYTES, decode_record, record_too_large
from skyfill.atproto.repo import Commit, read_commit
from skyfill.atproto.stream.frames import CommitFrame, RepoOp, SyncFrame
from skyfill.atproto.syntax import is_valid_repo_path, parse_datetime

Proof = Literal["verified", "no_prev_data", "skipped"]
"""`verified`: the ops inverted give prevData; `no_prev_data`: the event has none (a repo's
first commit, or a host before sync 1.1); `skipped`: the caller asked for no check."""


@dataclass(frozen=True, slots=True)
class CommitPut:
    """A record a commit creates or updates, decoded as the getRepo path decodes it."""

    action: Literal["create", "update"]
    collection: str
    rkey: str
    cid: str
    record: str
    """atproto JSON text."""
    created_at: datetime | None


@dataclass(frozen=True, slots=True)
class CommitDelete:
    collection: str
    rkey: str


@dataclass(frozen=True, slots=True)
class VerifiedCommit:
    rev: str
    commit_cid: str
    data: bytes
    """The new MST root (raw CID)."""
    puts: tuple[CommitPut, ...]
    """Creates and updates, in op order (only of collections `keep_collection` accepts)."""
    deletes: tuple[CommitDelete, ...]
    proof: Proof


def verify_commit(
    frame: CommitFrame,
    signing_key: str | None,
    *,
    keep_collection: Callable[[str], bool] | None = None,
    check_proof: bool = True,
) -> VerifiedCommit:
    """Verify a `#commit` event and decode its ops; InvalidRepo (with its kind) if it fails.

    `signing_key` (a did:key) None: the signature is not checked. `keep_collection`: the
    records of other collections are checked (CID, size) but neither decoded nor returned,
    nor are their deletes (as `decode_repo` does)."""
    fast = _verified_fast(frame, signing_key, keep_collection, check_proof)
    if fast is not None:
        return fast
    root, get_block = _read_slice(frame.blocks)
    if root != frame.commit:
        raise InvalidRepo(
            f"the slice's root {_cid_text(root)} is not the event's commit "
            f"{_cid_text(frame.commit)}",
            RepoFault.EVENT_MISMATCH,
        )
    commit = _checked_commit(get_block, frame.commit, frame.repo, frame.rev, signing_key)
    puts, deletes = _decode_ops(frame.ops, keep_collection, _records_of(get_block))
    return VerifiedCommit(
        rev=commit.rev,
        commit_cid=commit.cid,
        data=commit.data,
        puts=puts,
        deletes=deletes,
        proof=_check_proof(frame, commit.data, get_block) if check_proof else "skipped",
    )


def verify_sync(frame: SyncFrame, signing_key: str | None) -> tuple[str, str]:
    """Verify a `#sync` event (its CAR's commit block: did, rev, signature); return the
    repo's new (rev, commit CID). InvalidRepo if it does not verify."""
    root, get_block = _read_slice(frame.blocks)
    commit = _checked_commit(get_block, root, frame.did, frame.rev, signing_key)
    return commit.rev, commit.cid


def check_signature(frame: CommitFrame, signing_key: str) -> None:
    """Only the signature of a `#commit` event's commit block, with `signing_key`: for a
    commit whose other checks were made without the key (`verify_commit(frame, None)`).
    InvalidRepo (`bad_signature`, or why the commit block cannot be read) if it fails."""
    car = read_car(frame.blocks)
    block = car.blocks.get(frame.commit)
    if block is None or not block_matches_cid(frame.commit, block):
        raise InvalidRepo(
            f"the slice lacks the commit block {_cid_text(frame.commit)}", RepoFault.MISSING_BLOCK
        )
    read_commit(car.blocks.__getitem__, frame.commit, frame.repo, signing_key)


BlockGetter = Callable[[bytes], bytes]


def _read_slice(car_bytes: bytes) -> tuple[bytes, BlockGetter]:
    """Read a CAR and check every block against its CID: its root, and a getter of its
    blocks (a missing one raises `missing_block`)."""
    car = read_car(car_bytes)
    blocks = car.blocks
    sha256 = hashlib.sha256
    for cid, block in blocks.items():
        # cid.block_matches_cid, inline
        if (
            len(cid) != 36
            or cid[2] != SHA2_256
            or cid[3] != 0x20
            or sha256(block).digest() != cid[4:]
        ):
            raise InvalidRepo(
                f"block does not match its CID {_cid_text(cid)}", RepoFault.CID_MISMATCH
            )

    def get_block(cid: bytes) -> bytes:
        block = blocks.get(cid)
        if block is None:
            raise InvalidRepo(f"missing block {_cid_text(cid)}", RepoFault.MISSING_BLOCK)
        return block

    return car.roots[0], get_block


def _checked_commit(
    get_block: BlockGetter, root: bytes, did: str, rev: str, signing_key: str | None
) -> Commit:
    commit = read_commit(get_block, root, did, signing_key)
    if commit.rev != rev:
        raise InvalidRepo(
            f"the commit's rev {commit.rev} is not the event's rev {rev}",
            RepoFault.EVENT_MISMATCH,
        )
    return commit


RecordReader = Callable[[bytes, str, str, bool], tuple[str, datetime | None] | None]
"""(record CID, collection, rkey, kept) -> the record's JSON text and createdAt; None for a
record of a collection not kept (its block checked, not decoded)."""


def _decode_ops(
    ops: tuple[RepoOp, ...],
    keep_collection: Callable[[str], bool] | None,
    read_record: RecordReader,
) -> tuple[tuple[CommitPut, ...], tuple[CommitDelete, ...]]:
    puts: list[CommitPut] = []
    deletes: list[CommitDelete] = []
    seen: set[str] = set()
    for op in ops:
        collection, rkey = _split_path(op.path, seen)
        keep = keep_collection is None or keep_collection(collection)
        if op.action == "delete":
            if keep:
                deletes.append(CommitDelete(collection=collection, rkey=rkey))
            continue
        # frames.decode_frame guarantees a create/update has a cid; a hand-made RepoOp may not
        if op.cid is None or op.action not in ("create", "update"):
            raise InvalidRepo(f"op {op.action} of {op.path} has no record CID", RepoFault.BAD_OPS)
        found = read_record(op.cid, collection, rkey, keep)
        if found is not None:
            puts.append(_put(op.action, collection, rkey, op.cid, *found))
    return tuple(puts), tuple(deletes)


def _split_path(path: str, seen: set[str]) -> tuple[str, str]:
    if not is_valid_repo_path(path):
        raise InvalidRepo(f"op path is not collection/rkey: {path[:80]!r}", RepoFault.BAD_OPS)
    if path in seen:
        raise InvalidRepo(f"a commit touches {path} twice", RepoFault.BAD_OPS)
    seen.add(path)
    collection, _, rkey = path.partition("/")
    return collection, rkey


def _records_of(get_block: BlockGetter) -> RecordReader:
    """Records read by the Python decoder (`record.decode_record`), the definition."""

    def read(
        cid: bytes, collection: str, rkey: str, keep: bool
    ) -> tuple[str, datetime | None] | None:
        block = get_block(cid)
        if not keep:
            if len(block) > MAX_RECORD_BYTES:
                raise record_too_large(collection, rkey)
            return None
        return decode_record(block, collection, rkey)

    return read


def _put(
    action: str, collection: str, rkey: str, cid: bytes, text: str, created_at: datetime | None
) -> CommitPut:
    """`CommitPut(...)`, without a frozen dataclass's per-field `__setattr__`."""
    put = slots.new(CommitPut)
    _set_action(put, "create" if action == "create" else "update")
    _set_collection(put, collection)
    _set_rkey(put, rkey)
    _set_cid(put, cid_to_str(cid))
    _set_record(put, text)
    _set_created_at(put, created_at)
    return put


_set_action, _set_collection, _set_rkey, _set_cid, _set_record, _set_created_at = slots.setters(
    CommitPut, "action", "collection", "rkey", "cid", "record", "created_at"
)


def _check_proof(frame: CommitFrame, data: bytes, get_block: BlockGetter) -> Proof:
    if frame.prev_data is None:
        return "no_prev_data"
    before = invert_ops(data, get_block, frame.ops, checked=True)  # _read_slice hashed them
    if before != frame.prev_data:
        raise InvalidRepo(
            f"inverting the ops gives {_cid_text(before)}, not prevData "
            f"{_cid_text(frame.prev_data)}",
            RepoFault.PREV_DATA_MISMATCH,
        )
    return "verified"


# --- the fast path ---------------------------------------------------------------------

_ACTION_CODES = {"create": 0, "update": 1, "delete": 2}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class _Declined(Exception):
    """The C module is not sure about this commit."""


def _verified_fast(
    frame: CommitFrame,
    signing_key: str | None,
    keep_collection: Callable[[str], bool] | None,
    check_proof: bool,
) -> VerifiedCommit | None:
    """`verify_commit`'s result through the C module, or None: not plainly valid (or no C
    module), which the Python path then decides."""
    index = fastrepo.slice_index(frame.blocks)
    if index is None or index.root != frame.commit or not index.check_all():
        return None
    commit = fastrepo.indexed_commit(index, frame.commit, frame.repo, signing_key)
    if commit is None or commit.rev != frame.rev:
        return None
    try:
        puts, deletes = _decode_ops(frame.ops, keep_collection, _records_in(index))
    except (_Declined, InvalidRepo):
        return None
    proof: Proof = "skipped"
    if check_proof:
        proof = "no_prev_data" if frame.prev_data is None else "verified"
        if frame.prev_data is not None:
            ops = [
                (_ACTION_CODES.get(op.action), op.path.encode(), op.cid, op.prev)
                for op in frame.ops
            ]
            if index.invert(commit.data, ops) != frame.prev_data:
                return None
    return VerifiedCommit(commit.rev, commit.cid, commit.data, puts, deletes, proof)


def _records_in(index: fastrepo.CarIndex) -> RecordReader:
    """Records read by the C module; a record it is not sure about declines the commit."""

    def read(
        cid: bytes, collection: str, rkey: str, keep: bool
    ) -> tuple[str, datetime | None] | None:
        if not keep:
            block = index.block(cid)
            if block is None or len(block) > MAX_RECORD_BYTES:
                raise _Declined
            return None
        found = index.record(cid, MAX_RECORD_BYTES)
        if found is None:
            raise _Declined
        return found[0], created_at_of(found[1])

    return read


def created_at_of(created: int | str | None) -> datetime | None:
    """A createdAt as the C module gives it (`CarIndex.record`) as a datetime."""
    if created is None:
        return None
    if type(created) is int:
        return _EPOCH + timedelta(microseconds=created)
    return parse_datetime(created)


def _cid_text(cid: bytes) -> str:
    try:
        return cid_to_str(cid)
    except Exception:  # not a CID at all: show its bytes
        return cid.hex()

"""A whole repository from CAR bytes: verified commit, MST walk and decoded records.

`decode_repo` is the CPU-heavy step of a backfill; it is a plain function of bytes so
that it can run in another process. It holds one repository's blocks at a time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime

import cbrrr
import libipld

from skyfill.atproto import crypto, mst
from skyfill.atproto.car import read_car, write_car
from skyfill.atproto.cid import (
    DAG_CBOR_SHA256_PREFIX,
    block_matches_cid,
    cid_for_block,
    cid_to_str,
)
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.record import MAX_RECORD_BYTES, decode_record, record_too_large
from skyfill.atproto.syntax import MAX_RECORD_KEY_LENGTH, RECORD_KEY, is_valid_nsid


@dataclass(slots=True)
class Commit:
    did: str
    rev: str
    cid: str
    data: bytes


@dataclass(slots=True)
class RepoRecords:
    """The current records of one repository, as columns (one entry per record)."""

    commit: Commit
    collections: list[str] = field(default_factory=list)
    rkeys: list[str] = field(default_factory=list)
    cids: list[str] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    created_at: list[datetime | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rkeys)


class _VerifiedBlocks:
    """Block look-up that checks each block against its CID the first time it is used."""

    def __init__(self, blocks: dict[bytes, bytes]) -> None:
        self._blocks = blocks

    def __call__(self, cid: bytes) -> bytes:
        block = self._blocks.get(cid)
        if block is None:
            raise InvalidRepo(f"missing block {_cid_text(cid)}", RepoFault.MISSING_BLOCK)
        if not block_matches_cid(cid, block):
            raise InvalidRepo(
                f"block does not match its CID {_cid_text(cid)}", RepoFault.CID_MISMATCH
            )
        return block


def _cid_text(cid: bytes) -> str:
    try:
        return cid_to_str(cid)
    except Exception:
        return cid.hex()


def read_commit(
    get_block: Callable[[bytes], bytes],
    root: bytes,
    expected_did: str | None,
    signing_key: str | None,
) -> Commit:
    """The commit block at `root`: a version 3 map of did, rev and data, of `expected_did`
    (when given) and signed with `signing_key` (when given); else InvalidRepo."""
    block = get_block(root)
    try:
        commit = libipld.decode_dag_cbor(block)
    except InvalidRepo:
        raise
    except Exception as exc:
        raise InvalidRepo(f"commit is not valid DAG-CBOR: {exc}", RepoFault.BAD_COMMIT) from None
    if not isinstance(commit, dict):
        raise InvalidRepo("commit is not a map", RepoFault.BAD_COMMIT)
    did, rev, data = commit.get("did"), commit.get("rev"), commit.get("data")
    if not isinstance(did, str) or not isinstance(data, bytes) or not isinstance(rev, str):
        raise InvalidRepo("commit lacks did, rev or data", RepoFault.BAD_COMMIT)
    if commit.get("version") != 3:
        raise InvalidRepo(
            f"unsupported repo version {commit.get('version')!r}", RepoFault.UNSUPPORTED_VERSION
        )
    if expected_did is not None and did != expected_did:
        raise InvalidRepo(
            f"repo belongs to {did}, not to the requested {expected_did}", RepoFault.WRONG_DID
        )
    if signing_key is not None:
        _verify_commit(block, commit.get("sig"), did, signing_key)
    return Commit(did, rev, cid_to_str(root), data)


def _verify_commit(block: bytes, sig: object, did: str, signing_key: str) -> None:
    """The commit's `sig` must sign the DAG-CBOR of the commit without it, with the key."""
    if not isinstance(sig, bytes):
        raise InvalidRepo(f"commit of {did} is not signed", RepoFault.BAD_SIGNATURE)
    # cbrrr keeps links as CIDs, so the unsigned map re-encodes to the bytes that were signed
    try:
        unsigned = cbrrr.decode_dag_cbor(block)
    except Exception as exc:  # libipld read it; a stricter decoder may not
        raise InvalidRepo(f"commit is not valid DAG-CBOR: {exc}", RepoFault.BAD_COMMIT) from None
    if not isinstance(unsigned, dict):
        raise InvalidRepo("commit is not a map", RepoFault.BAD_COMMIT)
    unsigned.pop("sig", None)
    try:
        valid = crypto.verify_signature(signing_key, cbrrr.encode_dag_cbor(unsigned), sig)
    except crypto.InvalidKey as exc:
        raise InvalidRepo(f"{did}: {exc}", RepoFault.NO_SIGNING_KEY) from None
    if not valid:
        raise InvalidRepo(
            f"commit signature of {did} does not verify with its key {signing_key}",
            RepoFault.BAD_SIGNATURE,
        )


def decode_repo(
    car_bytes: bytes,
    expected_did: str | None = None,
    keep_collection: Callable[[str], bool] | None = None,
    signing_key: str | None = None,
) -> RepoRecords:
    """Verify and decode a repo CAR. Raises InvalidRepo on any inconsistency.

    With `signing_key` (a did:key: the account's `#atproto` key), the commit's signature
    is verified before anything else is read (kind `bad_signature` when it does not).
    With `keep_collection`, only records of the collections it accepts are decoded and
    returned; the others are still checked against their CID (and size), not decoded.
    """
    car = read_car(car_bytes)
    get_block = _VerifiedBlocks(car.blocks)
    commit = read_commit(get_block, car.roots[0], expected_did, signing_key)
    out = RepoRecords(commit=commit)
    _decode_records(out, mst.walk(get_block, commit.data), car.blocks, keep_collection)
    return out


def _decode_records(
    out: RepoRecords,
    entries: Iterator[tuple[bytes, bytes]],
    blocks: dict[bytes, bytes],
    keep_collection: Callable[[str], bool] | None = None,
) -> None:
    """The hot loop: one pass per record, names bound locally (it runs ~10^5 times a repo).

    Entries come in key order, so records of one collection are contiguous: the collection's
    syntax and the filter are checked once per collection."""
    sha256, encode_cid, max_bytes = hashlib.sha256, libipld.encode_cid, MAX_RECORD_BYTES
    collections, rkeys, cids, records, created = (
        out.collections,
        out.rkeys,
        out.cids,
        out.records,
        out.created_at,
    )
    rkey_ok, max_rkey = RECORD_KEY.fullmatch, MAX_RECORD_KEY_LENGTH
    last_collection, keep = None, True
    for key, cid in entries:
        # The repo path rule (syntax.is_valid_repo_path), split for speed: the collection is
        # checked once per run of keys (records of one collection are contiguous), the
        # record key (which then has no `/`) by one regex match, unless it is ASCII letters
        # and digits only (TIDs, `self`: a subset of the rule, checked by C string methods
        # in a third of the time). Latin-1 never fails, and turns any non-ASCII byte into a
        # character that neither rule allows.
        collection, _, rkey = key.decode("latin-1").partition("/")
        if collection != last_collection:
            if not is_valid_nsid(collection):
                raise InvalidRepo(
                    f"MST key's collection is not an NSID: {key[:80]!r}", RepoFault.MST_INVALID_KEY
                )
            last_collection = collection
            keep = keep_collection is None or keep_collection(collection)
        if (
            not (rkey.isalnum() and rkey.isascii() and len(rkey) <= max_rkey)
            and rkey_ok(rkey) is None
        ):
            raise InvalidRepo(
                f"MST key is not collection/rkey: {key[:80]!r}", RepoFault.MST_INVALID_KEY
            )
        block = blocks.get(cid)
        if block is None:
            raise InvalidRepo(f"missing block {_cid_text(cid)}", RepoFault.MISSING_BLOCK)
        if cid[:4] != DAG_CBOR_SHA256_PREFIX or sha256(block).digest() != cid[4:]:
            raise InvalidRepo(
                f"block does not match its CID {_cid_text(cid)}", RepoFault.CID_MISMATCH
            )
        if not keep:
            if len(block) > max_bytes:
                raise record_too_large(collection, rkey)
            continue
        text, when = decode_record(block, collection, rkey)
        collections.append(collection)
        rkeys.append(rkey)
        cids.append(encode_cid(cid))
        records.append(text)
        created.append(when)


def build_repo(
    did: str, rev: str, records: dict[str, dict], *, sign: Callable[[bytes], bytes] | None = None
) -> tuple[bytes, str, dict[str, str]]:
    """Build a repo CAR from `{"collection/rkey": record}`.

    Records are python values for cbrrr (use cbrrr.CID for links). With `sign` (a key's
    `sign`: DAG-CBOR of the commit without `sig` -> 64-byte signature), the commit is
    signed; without it, its `sig` is 64 zero bytes. Returns the CAR bytes, the commit CID
    and each path's record CID. Used by the simulated network.
    """
    blocks: dict[bytes, bytes] = {}
    items: list[tuple[bytes, bytes]] = []
    paths: dict[str, str] = {}
    for path in sorted(records):
        block = cbrrr.encode_dag_cbor(records[path])
        cid = cid_for_block(block)
        blocks[cid] = block
        items.append((path.encode(), cid))
        paths[path] = cid_to_str(cid)
    data_root = mst.build(items, blocks)
    commit: dict = {
        "did": did,
        "version": 3,
        "data": cbrrr.CID(data_root),
        "rev": rev,
        "prev": None,
    }
    commit["sig"] = b"\x00" * 64 if sign is None else sign(cbrrr.encode_dag_cbor(commit))
    commit_block = cbrrr.encode_dag_cbor(commit)
    commit_cid = cid_for_block(commit_block)
    blocks[commit_cid] = commit_block
    car = write_car([commit_cid], [(commit_cid, commit_block), *blocks.items()])
    return car, cid_to_str(commit_cid), paths

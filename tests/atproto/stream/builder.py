"""A repo that writes signed sync 1.1 `#commit` events, as a PDS makes them, for tests.

Each commit's slice is what the reference PDS sends: the new commit, the new records, the
MST nodes the commit created and the covering proof `invert_ops` reads.
"""

from __future__ import annotations

import cbrrr

from skyfill.atproto import mst
from skyfill.atproto.car import write_car
from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.crypto import Curve, Keypair
from skyfill.atproto.mst_edit import diff_blocks, proof_blocks
from skyfill.atproto.stream.frames import CommitFrame, RepoOp, SyncFrame
from skyfill.atproto.tid import encode_tid

DID = "did:plc:abcdefghijklmnopqrstuvwx"
TIME = "2025-10-01T00:00:00.000Z"
START_MICROS = 1_760_000_000_000_000


class RepoWriter:
    """One account's repository; `commit` applies writes and returns the event."""

    def __init__(self, did: str = DID, key: Keypair | None = None) -> None:
        self.did = did
        self.key = key or Keypair.from_seed(Curve.K256, did)
        self.records: dict[str, bytes] = {}
        self.blocks: dict[bytes, bytes] = {}
        self.root: bytes | None = None
        self.rev: str | None = None
        self.seq = 0
        self.commit_cid = b""

    def _next_rev(self) -> str:
        return encode_tid(START_MICROS + self.seq * 1000)

    def commit(
        self,
        puts: dict[str, dict] | None = None,
        deletes: list[str] | None = None,
    ) -> CommitFrame:
        """Create or update `puts` (path -> record) and delete `deletes`, in one commit."""
        ops: list[RepoOp] = []
        new_records: list[bytes] = []
        for path, record in (puts or {}).items():
            block = cbrrr.encode_dag_cbor(record)
            cid = cid_for_block(block)
            self.blocks[cid] = block
            new_records.append(cid)
            prev = self.records.get(path)
            ops.append(RepoOp("update" if prev else "create", path, cid, prev))
            self.records[path] = cid
        for path in deletes or []:
            ops.append(RepoOp("delete", path, None, self.records.pop(path)))
        self.seq += 1
        since, self.rev = self.rev, self._next_rev()
        old_root = self.root
        items = sorted((path.encode(), cid) for path, cid in self.records.items())
        self.root = mst.build(items, self.blocks)
        commit_block = self._signed_commit()
        self.commit_cid = cid_for_block(commit_block)
        self.blocks[self.commit_cid] = commit_block
        nodes = diff_blocks(old_root, self.root, self.blocks.__getitem__)
        if old_root is not None:
            nodes |= proof_blocks(self.root, self.blocks.__getitem__, ops)
        slice_cids = [self.commit_cid, *sorted(nodes), *new_records]
        car = write_car([self.commit_cid], [(c, self.blocks[c]) for c in slice_cids])
        return CommitFrame(
            seq=self.seq,
            repo=self.did,
            rev=self.rev,
            since=since,
            commit=self.commit_cid,
            blocks=car,
            ops=tuple(ops),
            time=TIME,
            prev_data=old_root,
        )

    def _signed_commit(self) -> bytes:
        assert self.root is not None and self.rev is not None
        unsigned = {
            "did": self.did,
            "version": 3,
            "data": cbrrr.CID(self.root),
            "rev": self.rev,
            "prev": None,
        }
        sig = self.key.sign(cbrrr.encode_dag_cbor(unsigned))
        return cbrrr.encode_dag_cbor({**unsigned, "sig": sig})

    def sync(self) -> SyncFrame:
        """The `#sync` event of the current commit (a CAR of the commit block alone)."""
        assert self.rev is not None
        self.seq += 1
        block = self.blocks[self.commit_cid]
        car = write_car([self.commit_cid], [(self.commit_cid, block)])
        return SyncFrame(seq=self.seq, did=self.did, rev=self.rev, blocks=car, time=TIME)


def post(text: str) -> dict:
    return {"$type": "app.bsky.feed.post", "text": text, "createdAt": "2025-10-01T00:00:00Z"}


def record_path(collection: str, i: int) -> str:
    """A record path of `collection` with a TID-shaped key, distinct for each `i`."""
    return f"{collection}/3l{i:03d}aaaaaaaa"


def writer_with_posts(count: int, collection: str = "app.bsky.feed.post") -> RepoWriter:
    """A repo that has committed `count` posts, one a commit (the next carries prevData)."""
    writer = RepoWriter()
    for i in range(count):
        writer.commit({record_path(collection, i): post(f"post {i}")})
    return writer


CREATED_AT_FORMS: list[object] = [
    "2025-03-04T05:06:07.123Z",
    "2025-03-04T05:06:07Z",
    "2025-03-04T05:06:07.123456789+05:30",
    "2025-03-04T05:06:07.123-00:00",
    "2025-03-04T05:06:07.123+00:00",
    "2023-02-29T00:00:00.000Z",
    "2024-02-29T23:59:59.999999Z",
    "0000-01-01T00:00:00.000Z",
    "0001-01-01T00:00:00Z",
    "1900-03-01T00:00:00.5Z",
    "1969-12-31T23:59:59.999999Z",
    "9999-12-31T23:59:59.999999Z",
    "2025-03-04T05:06:07.9999999Z",
    "Z",
    "",
    "garbage",
    17,
    None,
]
"""A record's createdAt in every form the decoders must read alike (valid, impossible,
offsets, the edges of the calendar, not a string at all)."""

"""`verify_commit` and `verify_sync` on signed sync 1.1 commits made by `RepoWriter`: what
a valid commit decodes to (the getRepo path's records, byte for byte), and each way a
crafted one fails, as an InvalidRepo of its kind and never another exception."""

from __future__ import annotations

import random
from dataclasses import replace

import cbrrr
import pytest

from skyfill.atproto.car import read_car, write_car
from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.crypto import Curve, Keypair
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.repo import decode_repo
from skyfill.atproto.stream.commit import CommitDelete, verify_commit, verify_sync
from skyfill.atproto.stream.frames import CommitFrame, RepoOp
from tests.atproto.stream.builder import RepoWriter, post

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"


def path(collection: str, i: int) -> str:
    return f"{collection}/3l{i:03d}aaaaaaaa"


def like(i: int) -> dict:
    return {"$type": LIKE, "subject": {"uri": f"at://x/{i}"}, "createdAt": "not a date"}


@pytest.fixture
def writer() -> RepoWriter:
    """A repo of 40 posts and 40 likes, written one commit per record."""
    writer = RepoWriter()
    for i in range(40):
        writer.commit({path(POST, i): post(f"post {i}")})
        writer.commit({path(LIKE, i): like(i)})
    return writer


def mixed_commit(writer: RepoWriter) -> CommitFrame:
    return writer.commit(
        {path(POST, 3): post("edited"), path(POST, 99): post("new"), path(LIKE, 98): like(98)},
        deletes=[path(POST, 5), path(LIKE, 6)],
    )


def expect(kind: RepoFault, frame: CommitFrame, key: str | None, **options: object) -> None:
    with pytest.raises(InvalidRepo) as error:
        verify_commit(frame, key, **options)  # type: ignore[arg-type]
    assert error.value.kind is kind, error.value


def test_a_valid_commit_decodes_its_ops(writer: RepoWriter) -> None:
    frame = mixed_commit(writer)
    commit = verify_commit(frame, writer.key.did_key)
    assert commit.proof == "verified"
    assert (commit.rev, commit.data) == (frame.rev, writer.root)
    assert [(p.action, p.collection, p.rkey) for p in commit.puts] == [
        ("update", POST, path(POST, 3).split("/")[1]),
        ("create", POST, path(POST, 99).split("/")[1]),
        ("create", LIKE, path(LIKE, 98).split("/")[1]),
    ]
    assert commit.deletes == (
        CommitDelete(POST, path(POST, 5).split("/")[1]),
        CommitDelete(LIKE, path(LIKE, 6).split("/")[1]),
    )


def test_puts_are_the_records_getrepo_gives(writer: RepoWriter) -> None:
    """The shared record decoder: a put's JSON text, CID and createdAt are the row that
    `decode_repo` makes of the same record in the whole repo."""
    commit = verify_commit(mixed_commit(writer), writer.key.did_key)
    blocks = list(writer.blocks.items())
    repo = decode_repo(write_car([writer.commit_cid], blocks), writer.did)
    rows = {
        (c, r): (cid, text, when)
        for c, r, cid, text, when in zip(
            repo.collections, repo.rkeys, repo.cids, repo.records, repo.created_at, strict=True
        )
    }
    for put in commit.puts:
        assert rows[put.collection, put.rkey] == (put.cid, put.record, put.created_at)
    assert commit.puts[0].created_at is not None and commit.puts[2].created_at is None


def test_first_commit_has_no_prev_data_and_proof_can_be_skipped() -> None:
    writer = RepoWriter()
    first = writer.commit({path(POST, 1): post("a")})
    assert verify_commit(first, writer.key.did_key).proof == "no_prev_data"
    second = writer.commit({path(POST, 2): post("b")})
    assert verify_commit(second, None, check_proof=False).proof == "skipped"


def test_keep_collection_filters_puts_and_deletes(writer: RepoWriter) -> None:
    commit = verify_commit(mixed_commit(writer), None, keep_collection=lambda c: c == LIKE)
    assert {p.collection for p in commit.puts} == {LIKE}
    assert {d.collection for d in commit.deletes} == {LIKE}


def test_sync_verifies_its_commit(writer: RepoWriter) -> None:
    sync = writer.sync()
    assert verify_sync(sync, writer.key.did_key)[0] == writer.rev
    with pytest.raises(InvalidRepo) as error:
        verify_sync(sync, Keypair.from_seed(Curve.K256, "other").did_key)
    assert error.value.kind is RepoFault.BAD_SIGNATURE
    with pytest.raises(InvalidRepo) as error:
        verify_sync(replace(sync, rev="3laaaaaaaaaaa"), None)
    assert error.value.kind is RepoFault.EVENT_MISMATCH


def edit_slice(frame: CommitFrame, edit: object) -> CommitFrame:
    """The frame with its CAR's blocks passed through `edit(blocks) -> blocks` (root kept)."""
    car = read_car(frame.blocks)
    blocks = edit(dict(car.blocks))  # type: ignore[operator]
    return replace(frame, blocks=write_car(car.roots, list(blocks.items())))


def test_a_block_that_does_not_match_its_cid(writer: RepoWriter) -> None:
    frame = mixed_commit(writer)
    record_cid = frame.ops[0].cid
    tampered = edit_slice(frame, lambda b: b | {record_cid: b[record_cid] + b"\x00"})
    expect(RepoFault.CID_MISMATCH, tampered, writer.key.did_key)


def test_wrong_signature(writer: RepoWriter) -> None:
    other = Keypair.from_seed(Curve.P256, "someone else").did_key
    expect(RepoFault.BAD_SIGNATURE, mixed_commit(writer), other)


def test_a_tampered_op_cid(writer: RepoWriter) -> None:
    frame = mixed_commit(writer)
    forged = cbrrr.encode_dag_cbor(post("forged"))
    forged_cid = cid_for_block(forged)
    ops = (replace(frame.ops[0], cid=forged_cid), *frame.ops[1:])
    # the record is not in the slice
    expect(RepoFault.MISSING_BLOCK, replace(frame, ops=ops), writer.key.did_key)
    # the record is in the slice too: the signed tree does not hold it
    with_block = edit_slice(replace(frame, ops=ops), lambda b: b | {forged_cid: forged})
    expect(RepoFault.BAD_OPS, with_block, writer.key.did_key)


def test_a_dropped_op_fails_the_proof(writer: RepoWriter) -> None:
    frame = mixed_commit(writer)
    expect(RepoFault.PREV_DATA_MISMATCH, replace(frame, ops=frame.ops[1:]), None)


def test_wrong_prev_data(writer: RepoWriter) -> None:
    frame = mixed_commit(writer)
    expect(RepoFault.PREV_DATA_MISMATCH, replace(frame, prev_data=frame.commit), None)


def test_a_missing_proof_node(writer: RepoWriter) -> None:
    frame = writer.commit({path(POST, 50): post("x")})
    car = read_car(frame.blocks)
    nodes = [cid for cid in car.blocks if cid != frame.commit and cid != frame.ops[0].cid]
    assert nodes
    for node in nodes:
        without = edit_slice(frame, lambda b, n=node: {k: v for k, v in b.items() if k != n})
        with pytest.raises(InvalidRepo) as error:
            verify_commit(without, None)
        assert error.value.kind in (RepoFault.MISSING_PROOF, RepoFault.MISSING_BLOCK)


@pytest.mark.parametrize(
    ("change", "kind"),
    [
        ({"commit": cid_for_block(b"other")}, RepoFault.EVENT_MISMATCH),
        ({"rev": "3laaaaaaaaaaa"}, RepoFault.EVENT_MISMATCH),
        ({"repo": "did:plc:zzzzzzzzzzzzzzzzzzzzzzzz"}, RepoFault.WRONG_DID),
        ({"blocks": b""}, RepoFault.MALFORMED_CAR),
        ({"blocks": b"\x05garbage"}, RepoFault.MALFORMED_CAR),
    ],
)
def test_event_fields_must_match_the_commit(
    writer: RepoWriter, change: dict, kind: RepoFault
) -> None:
    expect(kind, replace(mixed_commit(writer), **change), writer.key.did_key)


@pytest.mark.parametrize("bad_path", ["app.bsky.feed.post", "nsid/..", "a/b/c", "x.y.z/a b"])
def test_op_paths_must_be_repo_paths(writer: RepoWriter, bad_path: str) -> None:
    frame = mixed_commit(writer)
    ops = (replace(frame.ops[0], path=bad_path), *frame.ops[1:])
    expect(RepoFault.BAD_OPS, replace(frame, ops=ops), None, check_proof=False)


def test_a_path_twice(writer: RepoWriter) -> None:
    frame = mixed_commit(writer)
    expect(RepoFault.BAD_OPS, replace(frame, ops=(*frame.ops, frame.ops[0])), None)


def test_a_record_that_is_not_a_map() -> None:
    writer = RepoWriter()
    frame = writer.commit({path(POST, 1): [1, 2]})  # type: ignore[dict-item]
    expect(RepoFault.BAD_RECORD, frame, writer.key.did_key)


def test_a_hand_made_create_without_cid(writer: RepoWriter) -> None:
    frame = mixed_commit(writer)
    ops = (RepoOp("create", frame.ops[1].path, None), *frame.ops[2:])
    expect(RepoFault.BAD_OPS, replace(frame, ops=ops), None, check_proof=False)


def test_random_damage_to_the_slice_raises_only_invalid_repo(writer: RepoWriter) -> None:
    frame = mixed_commit(writer)
    rng = random.Random(15)
    for _ in range(400):
        data = bytearray(frame.blocks)
        at = rng.randrange(len(data))
        data[at] = (data[at] + rng.randrange(1, 256)) % 256
        with pytest.raises(InvalidRepo):
            verify_commit(replace(frame, blocks=bytes(data)), writer.key.did_key)

"""The stream's fast path (`_fastrepo_slice.h`, through `stream.commit.verify_commit`)
against its definition, the Python path: for every commit, the same VerifiedCommit (down to
each createdAt's offset) or the same InvalidRepo. Valid commits must take the fast path,
else the C code would be dead code that passes every comparison; anything odd may be
declined, never decided differently.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import cbrrr
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyfill.atproto import fastrepo, mst
from skyfill.atproto.car import write_car
from skyfill.atproto.cid import cid_for_block, cid_from_str
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.mst_edit import invert_ops, proof_blocks
from skyfill.atproto.stream import commit as stream_commit
from skyfill.atproto.stream.commit import verify_commit
from skyfill.atproto.stream.frames import CommitFrame, RepoOp
from tests.atproto.fuzzing import getter, mutate_block, mutate_car, sample_records
from tests.atproto.stream.builder import CREATED_AT_FORMS, RepoWriter, post, writer_with_posts
from tests.atproto.stream.builder import record_path as path

pytestmark = pytest.mark.skipif(not fastrepo.AVAILABLE, reason="needs the built C module")

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
ACTIONS = {"create": 0, "update": 1, "delete": 2}
FIXTURES = json.loads(
    (
        Path(__file__).parent.parent.parent / "interop/vectors/firehose/commit-proof-fixtures.json"
    ).read_text()
)


def _verify(frame: CommitFrame, key: str | None, pure: bool, mp: pytest.MonkeyPatch, **kw: object):
    mp.setattr(fastrepo, "ENABLED", not pure)
    try:
        return repr(verify_commit(frame, key, **kw))  # type: ignore[arg-type]
    except InvalidRepo as refused:
        return ("invalid", refused.kind, str(refused))


def same_either_way(
    frame: CommitFrame, key: str | None, mp: pytest.MonkeyPatch, **kw: object
) -> object:
    reference = _verify(frame, key, True, mp, **kw)
    assert _verify(frame, key, False, mp, **kw) == reference
    return reference


def fast(frame: CommitFrame, key: str | None, **kw: object) -> bool:
    """Whether the C module answers for this commit itself."""
    keep = kw.get("keep_collection")
    proof = bool(kw.get("check_proof", True))
    return stream_commit._verified_fast(frame, key, keep, proof) is not None  # type: ignore[arg-type]


@pytest.fixture
def writer() -> RepoWriter:
    return writer_with_posts(60, POST)


def test_every_kind_of_commit_takes_the_fast_path(
    writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(3)
    key = writer.key.did_key
    frames = [RepoWriter().commit({path(POST, 0): post("first")})]  # no prevData
    for i in range(40):
        present = sorted(writer.records)
        puts = {path(rnd.choice([POST, LIKE]), 100 + i * 3 + j): post(f"n{i}") for j in range(3)}
        puts |= {p: post(f"edit {i}") for p in rnd.sample(present, rnd.randint(0, 2))}
        deletes = [p for p in rnd.sample(present, rnd.randint(0, 3)) if p not in puts]
        frames.append(writer.commit(puts, deletes))
    for frame in frames:
        for options in ({}, {"check_proof": False}, {"keep_collection": lambda c: c == LIKE}):
            result = same_either_way(frame, key, monkeypatch, **options)
            assert isinstance(result, str)
            monkeypatch.setattr(fastrepo, "ENABLED", True)
            assert fast(frame, key, **options)
        same_either_way(frame, None, monkeypatch)


def test_sample_records_agree(writer: RepoWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    key = writer.key.did_key
    for i, (record_path, record) in enumerate(sample_records(60, seed=4).items()):
        frame = writer.commit({record_path: record})
        assert isinstance(same_either_way(frame, key, monkeypatch), str), i


@pytest.mark.parametrize("created", CREATED_AT_FORMS)
def test_created_at_of_every_form_agrees(
    created: object, writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = writer.commit({path(POST, 500): {"$type": POST, "text": "t", "createdAt": created}})
    assert isinstance(same_either_way(frame, writer.key.did_key, monkeypatch), str)
    monkeypatch.setattr(fastrepo, "ENABLED", True)
    assert fast(frame, writer.key.did_key)


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("a float", b"\xa1\x61a\xfb" + bytes(8)),
        ("a $link key", b"\xa1\x65$link\x01"),
        ("not a map", b"\x82\x01\x02"),
        ("trailing bytes", b"\xa1\x61a\x01\x00"),
        ("too large", b"\xa1\x61a\x5a\x00\x10\x00\x00" + bytes(1 << 20)),
    ],
)
def test_odd_records_are_declined_and_judged_alike(
    name: str, block: bytes, writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = writer.commit({path(POST, 600): {"x": 1}})
    cid = cid_for_block(block)
    blocks = [(c, b) for c, b in _car_blocks(frame.blocks) if c != frame.ops[0].cid]
    car = write_car([frame.commit], [*blocks, (cid, block)])
    odd = _with(frame, blocks=car, ops=(RepoOp("create", frame.ops[0].path, cid, None),))
    same_either_way(odd, None, monkeypatch, check_proof=False)
    monkeypatch.setattr(fastrepo, "ENABLED", True)
    assert not fast(odd, None, check_proof=False)


def test_damaged_slices_and_records_are_judged_alike(
    writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(11)
    key = writer.key.did_key
    frame = writer.commit({path(POST, 700): post("a"), path(LIKE, 701): post("b")}, [path(POST, 2)])
    outcomes = set()
    for _ in range(300):
        damaged = _with(frame, blocks=mutate_car(frame.blocks, rnd, rounds=rnd.randint(1, 2)))
        outcomes.add(_verdict(same_either_way(damaged, key, monkeypatch)))
    record_cid = frame.ops[0].cid
    for _ in range(150):
        block = mutate_block(dict(_car_blocks(frame.blocks))[record_cid], rnd)
        blocks = [(c, block if c == record_cid else b) for c, b in _car_blocks(frame.blocks)]
        damaged = _with(frame, blocks=write_car([frame.commit], blocks))
        outcomes.add(_verdict(same_either_way(damaged, key, monkeypatch)))
    assert len(outcomes) > 3  # the mutations reached several verdicts


def test_wrong_ops_prev_data_and_key_are_judged_alike(
    writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = writer.key.did_key
    frame = writer.commit({path(POST, 800): post("a"), path(POST, 3): post("b")}, [path(POST, 4)])
    other = RepoWriter(did="did:plc:someoneelseentirelyxyz").key.did_key
    wrong = [
        _with(frame, prev_data=cid_for_block(b"another root")),
        _with(frame, ops=frame.ops[:-1]),
        _with(frame, ops=(*frame.ops, frame.ops[0])),
        _with(frame, ops=tuple(RepoOp(o.action, o.path, o.cid, None) for o in frame.ops)),
        _with(frame, ops=(RepoOp("create", path(POST, 801), frame.ops[0].cid, None),)),
        _with(frame, rev="3zzzzzzzzzzzz"),
        _with(frame, repo="did:plc:someoneelseentirelyxyz"),
    ]
    for bad in wrong:
        assert isinstance(same_either_way(bad, key, monkeypatch), tuple)
    assert isinstance(same_either_way(frame, other, monkeypatch), tuple)


# --- the inversion alone -------------------------------------------------------------------


def _c_invert(car: bytes, root: bytes, ops: list[RepoOp]) -> bytes | None:
    index = fastrepo.slice_index(car)
    assert index is not None
    return index.invert(
        root, [(ACTIONS.get(o.action), o.path.encode(), o.cid, o.prev) for o in ops]
    )


def _python_invert(blocks: dict[bytes, bytes], root: bytes, ops: list[RepoOp]) -> bytes | None:
    try:
        return invert_ops(root, getter(blocks), ops)
    except InvalidRepo:
        return None


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["comment"] for f in FIXTURES])
def test_interop_fixtures_invert_in_c(fixture: dict) -> None:
    leaf = cid_from_str(fixture["leafValue"])
    before = {key.encode(): leaf for key in fixture["keys"]}
    after = {k: leaf for k in before if k.decode() not in fixture["dels"]}
    after |= {key.encode(): leaf for key in fixture["adds"]}
    blocks: dict[bytes, bytes] = {}
    old, new = mst.build(sorted(before.items()), blocks), mst.build(sorted(after.items()), blocks)
    ops = [RepoOp("create", key, leaf, None) for key in fixture["adds"]]
    ops += [RepoOp("delete", key, None, leaf) for key in fixture["dels"]]
    proof = [cid_from_str(cid) for cid in fixture["blocksInProof"]]
    assert _c_invert(write_car([new], [(c, blocks[c]) for c in proof]), new, ops) == old


_COLLECTIONS = [POST, LIKE, "app.bsky.graph.follow"]
_PATHS = st.builds(
    lambda c, r: f"{c}/{r}",
    st.sampled_from(_COLLECTIONS),
    st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=1, max_size=13),
)


def _value(i: int) -> bytes:
    return cid_for_block(f"record {i}".encode())


@st.composite
def _inversions(draw: st.DrawFn) -> tuple[dict[bytes, bytes], bytes, list[RepoOp], set[bytes]]:
    """A commit on a tree, its slice (the covering proof, maybe short of a node) and its ops
    (maybe not those of the commit)."""
    paths = draw(st.lists(_PATHS, max_size=150, unique=True))
    before = {p: _value(i) for i, p in enumerate(paths)}
    created = draw(st.lists(_PATHS.filter(lambda p: p not in before), max_size=8, unique=True))
    touched = draw(st.lists(st.sampled_from(paths), max_size=6, unique=True)) if paths else []
    ops = [RepoOp("create", p, _value(10_000 + i), None) for i, p in enumerate(created)]
    for i, p in enumerate(touched):
        kind = draw(st.sampled_from(["update", "delete"]))
        ops.append(RepoOp(kind, p, _value(20_000 + i) if kind == "update" else None, before[p]))
    ops = draw(st.permutations(ops))
    after = dict(before)
    for op in ops:
        if op.action == "delete":
            del after[op.path]
        else:
            after[op.path] = op.cid  # type: ignore[assignment]
    blocks: dict[bytes, bytes] = {}
    mst.build(sorted((p.encode(), v) for p, v in before.items()), blocks)
    new = mst.build(sorted((p.encode(), v) for p, v in after.items()), blocks)
    proof = proof_blocks(new, getter(blocks), ops)
    if proof and draw(st.booleans()) and draw(st.booleans()):
        proof.discard(draw(st.sampled_from(sorted(proof))))
    if ops and draw(st.integers(0, 9)) == 0:
        i = draw(st.integers(0, len(ops) - 1))
        ops[i] = RepoOp("update", ops[i].path, _value(99_999), ops[i].prev or _value(1))
    return blocks, new, ops, proof


@settings(max_examples=300, deadline=None)
@given(_inversions())
def test_c_inversion_equals_the_python_one_or_declines(
    case: tuple[dict[bytes, bytes], bytes, list[RepoOp], set[bytes]],
) -> None:
    blocks, new, ops, proof = case
    sliced = {cid: blocks[cid] for cid in proof}
    filler = (cid_for_block(b"\xa0"), b"\xa0")  # a CAR needs a block; this one is no node
    car = write_car([new], [*sliced.items()] or [filler])
    assert _c_invert(car, new, ops) == _python_invert(sliced, new, ops)


# --- helpers -------------------------------------------------------------------------------


def _verdict(result: object) -> object:
    return result[1] if isinstance(result, tuple) else "valid"


def _car_blocks(car: bytes) -> list[tuple[bytes, bytes]]:
    from skyfill.atproto.car import read_car

    return list(read_car(car).blocks.items())


def _with(frame: CommitFrame, **changes: object) -> CommitFrame:
    fields = {name: getattr(frame, name) for name in CommitFrame.__slots__}  # type: ignore[attr-defined]
    return CommitFrame(**(fields | changes))  # type: ignore[arg-type]


def test_the_record_json_is_the_definition(monkeypatch: pytest.MonkeyPatch) -> None:
    """`record()` directly: the JSON and the createdAt of a few records, as decode_record."""
    from skyfill.atproto.record import decode_record

    records = list(sample_records(30, seed=9).values())
    blocks = [cbrrr.encode_dag_cbor(r) for r in records]
    car = write_car([cid_for_block(blocks[0])], [(cid_for_block(b), b) for b in blocks])
    index = fastrepo.slice_index(car)
    assert index is not None and index.check_all()
    for block in blocks:
        found = index.record(cid_for_block(block), 1 << 20)
        assert found is not None
        text, created = decode_record(block, POST, "x")
        assert found[0] == text
        assert stream_commit.created_at_of(found[1]) == created

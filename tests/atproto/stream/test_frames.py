"""`decode_frame` on crafted messages: every frame type round-trips through `encode_frame`;
malformed CBOR, missing fields, wrong types and oversized messages raise FrameError (with
the seq when the body has one), never another exception."""

from __future__ import annotations

import random
from dataclasses import replace

import cbrrr
import libipld
import pytest

from skyfill.atproto import slots
from skyfill.atproto.stream import frames
from skyfill.atproto.stream.encode import encode_frame
from skyfill.atproto.stream.frames import (
    AccountFrame,
    CommitFrame,
    ErrorFrame,
    FrameError,
    IdentityFrame,
    InfoFrame,
    RepoOp,
    SyncFrame,
    UnknownFrame,
    decode_frame,
)
from tests.atproto.stream.builder import RepoWriter, post

DID = "did:plc:abcdefghijklmnopqrstuvwx"
CID = cbrrr.CID(bytes([1, 0x71, 0x12, 0x20]) + bytes(32))


def commit_frames() -> list[CommitFrame]:
    writer = RepoWriter()
    first = writer.commit({"app.bsky.feed.post/3laaaaaaaaaaa": post("a")})
    second = writer.commit(
        {
            "app.bsky.feed.post/3laaaaaaaaaaa": post("b"),
            "app.bsky.feed.post/3lbbbbbbbbbbb": post("c"),
        }
    )
    third = writer.commit(deletes=["app.bsky.feed.post/3lbbbbbbbbbbb"])
    return [first, second, third]


FRAMES = [
    *commit_frames(),
    SyncFrame(seq=4, did=DID, rev="3laaaaaaaaaaa", blocks=b"car", time="t"),
    IdentityFrame(seq=5, did=DID, time="t", handle="a.test"),
    IdentityFrame(seq=6, did=DID, time="t"),
    AccountFrame(seq=7, did=DID, active=False, time="t", status="deactivated"),
    AccountFrame(seq=8, did=DID, active=True, time="t"),
    InfoFrame(name="OutdatedCursor"),
    InfoFrame(name="Other", message="text"),
    ErrorFrame(error="FutureCursor", message="Cursor in the future."),
    ErrorFrame(error="ConsumerTooSlow"),
    UnknownFrame(type="#labels", seq=9, body={"seq": 9, "labels": []}),
]


@pytest.mark.parametrize("frame", FRAMES, ids=lambda f: type(f).__name__)
def test_every_frame_type_round_trips(frame: object) -> None:
    assert decode_frame(encode_frame(frame)) == frame  # type: ignore[arg-type]


def test_commit_ops_keep_their_actions_and_prev() -> None:
    frames = [decode_frame(encode_frame(f)) for f in commit_frames()]
    ops = [[(op.action, op.cid is None, op.prev is None) for op in f.ops] for f in frames]  # type: ignore[union-attr]
    assert ops == [
        [("create", False, True)],
        [("update", False, False), ("create", False, True)],
        [("delete", True, False)],
    ]
    assert [f.prev_data is None for f in frames] == [True, False, False]  # type: ignore[union-attr]


def message(header: object, body: object) -> bytes:
    return cbrrr.encode_dag_cbor(header) + cbrrr.encode_dag_cbor(body)


def commit_body() -> dict:
    return {
        "seq": 12,
        "repo": DID,
        "rev": "3laaaaaaaaaaa",
        "since": None,
        "commit": CID,
        "blocks": b"car",
        "ops": [{"action": "create", "path": "a.b.c/x", "cid": CID}],
        "time": "2025-10-01T00:00:00Z",
        "tooBig": False,
        "rebase": False,
        "blobs": [],
    }


COMMIT = {"op": 1, "t": "#commit"}


def test_oversized_is_refused_unread() -> None:
    garbage = b"\xff" * 101  # would be "not DAG-CBOR" if it were read
    with pytest.raises(FrameError, match="larger than 100"):
        decode_frame(garbage, max_bytes=100)
    good = encode_frame(FRAMES[0])
    with pytest.raises(FrameError, match="larger than"):
        decode_frame(good, max_bytes=len(good) - 1)
    assert decode_frame(good, max_bytes=len(good)) == FRAMES[0]


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        cbrrr.encode_dag_cbor(COMMIT),
        message(COMMIT, commit_body())[:-3],
        message(COMMIT, commit_body()) + cbrrr.encode_dag_cbor(1),
        message([1, "#commit"], commit_body()),
        message(COMMIT, [commit_body()]),
        message({"op": 1}, commit_body()),
        message({"op": 1, "t": 7}, commit_body()),
        message({"op": True, "t": "#commit"}, commit_body()),
        message({"op": 2, "t": "#commit"}, commit_body()),
        message({"op": "1", "t": "#commit"}, commit_body()),
        message({"op": -1}, {"message": "no error name"}),
    ],
)
def test_malformed_messages(data: bytes) -> None:
    with pytest.raises(FrameError):
        decode_frame(data)


REQUIRED = ["seq", "repo", "rev", "commit", "blocks", "ops", "time"]


@pytest.mark.parametrize("name", REQUIRED)
def test_missing_commit_fields_name_the_field_and_seq(name: str) -> None:
    body = commit_body()
    del body[name]
    with pytest.raises(FrameError, match=name) as error:
        decode_frame(message(COMMIT, body))
    assert error.value.seq == (None if name == "seq" else 12)


def test_optional_commit_fields_may_be_absent() -> None:
    body = commit_body()
    for name in ("since", "tooBig", "rebase", "blobs"):
        del body[name]
    frame = decode_frame(message(COMMIT, body))
    assert isinstance(frame, CommitFrame)
    assert (frame.since, frame.too_big, frame.prev_data) == (None, False, None)


BAD_VALUES = [
    ("seq", "12"),
    ("seq", True),
    ("seq", -1),
    ("repo", "not a did"),
    ("repo", b"did:plc:x"),
    ("rev", "2024-01-01"),
    ("since", "x"),
    ("commit", "bafyrei"),
    ("commit", b"\x01q\x12 short"),
    ("commit", cbrrr.CID(bytes([1, 0x55, 0x12, 0x20]) + bytes(32))),
    ("blocks", "car"),
    ("ops", {"action": "create"}),
    ("ops", ["create"]),
    ("ops", [{"action": "upsert", "path": "a.b.c/x", "cid": CID}]),
    ("ops", [{"action": "create", "path": "a.b.c/x", "cid": None}]),
    ("ops", [{"action": "delete", "path": "a.b.c/x", "cid": CID}]),
    ("ops", [{"action": "create", "path": 5, "cid": CID}]),
    ("ops", [{"action": "update", "path": "a.b.c/x", "cid": CID, "prev": b"x"}]),
    ("prevData", b"x"),
    ("time", 5),
    ("tooBig", "no"),
]


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_wrong_types_in_a_commit(name: str, value: object) -> None:
    body = commit_body() | {name: value}
    with pytest.raises(FrameError) as error:
        decode_frame(message(COMMIT, body))
    assert error.value.seq == (None if name == "seq" else 12)


@pytest.mark.parametrize(
    ("kind", "body"),
    [
        ("#sync", {"seq": 1, "did": DID, "rev": "3laaaaaaaaaaa", "time": "t"}),
        ("#sync", {"seq": 1, "did": DID, "rev": "3laaaaaaaaaaa", "blocks": CID, "time": 1}),
        ("#identity", {"seq": 1, "did": DID}),
        ("#identity", {"seq": 1, "did": DID, "time": "t", "handle": "not a handle"}),
        ("#account", {"seq": 1, "did": DID, "time": "t"}),
        ("#account", {"seq": 1, "did": DID, "time": "t", "active": 1}),
        ("#account", {"seq": 1, "did": DID, "time": "t", "active": False, "status": 3}),
        ("#info", {"message": "no name"}),
    ],
)
def test_other_types_are_checked_too(kind: str, body: dict) -> None:
    with pytest.raises(FrameError):
        decode_frame(message({"op": 1, "t": kind}, body))


def test_unknown_type_keeps_its_seq_and_body() -> None:
    frame = decode_frame(message({"op": 1, "t": "#future"}, {"seq": 3, "x": [1]}))
    assert frame == UnknownFrame(type="#future", seq=3, body={"seq": 3, "x": [1]})


def test_random_damage_raises_only_frame_error() -> None:
    """Flip, drop and insert bytes of real frames: each either decodes or is a FrameError."""
    rng = random.Random(15)
    originals = [encode_frame(f) for f in FRAMES]
    errors = 0
    for _ in range(3000):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 3)):
            at = rng.randrange(len(data))
            match rng.randrange(3):
                case 0:
                    data[at] = rng.randrange(256)
                case 1:
                    del data[at]
                case _:
                    data.insert(at, rng.randrange(256))
        try:
            decode_frame(bytes(data))
        except FrameError:
            errors += 1
    assert errors > 1000  # most damage is caught by the strict reading


def test_a_replaced_field_changes_the_decoded_frame() -> None:
    frame = FRAMES[0]
    assert isinstance(frame, CommitFrame)
    changed = replace(frame, seq=99, since="3laaaaaaaaaaa")
    assert decode_frame(encode_frame(changed)) == changed != frame


# --- the fast path of #commit ----------------------------------------------------------------


def strict_commit(body: dict) -> CommitFrame | FrameError:
    """The strict reader's answer (`decode_frame` without its fast path)."""
    seq = body.get("seq")
    try:
        return frames._commit(frames._Fields(body, seq if type(seq) is int else None))
    except FrameError as error:
        return error


def usual_bodies() -> list[dict]:
    raw_cid = cbrrr.CID(bytes([1, 0x71, 0x12, 0x20]) + bytes(range(32)))
    variants = [
        {},
        {"since": "3laaaaaaaaaaa", "prevData": raw_cid},
        {"tooBig": True, "rebase": True},
        {"tooBig": None, "rebase": None, "blobs": None},
        {"repo": "did:web:example.com"},
        {"ops": []},
        {
            "ops": [
                {"action": "update", "path": "a.b.c/x", "cid": CID, "prev": raw_cid},
                {"action": "delete", "path": "a.b.c/y", "cid": None, "prev": raw_cid},
                {"action": "delete", "path": "a.b.c/z"},
            ]
        },
    ]
    return [commit_body() | variant for variant in variants]


def body_of(data: bytes) -> dict:
    return libipld.decode_dag_cbor_multi(data)[1]


@pytest.mark.parametrize("body", usual_bodies())
def test_the_fast_path_reads_a_commit_as_the_strict_reader(body: dict) -> None:
    decoded = body_of(message(COMMIT, body))
    fast = frames._usual_commit(decoded)
    assert fast is not None
    assert fast == strict_commit(decoded) == decode_frame(message(COMMIT, body))


@pytest.mark.parametrize(("name", "value"), BAD_VALUES)
def test_the_fast_path_leaves_every_bad_value_to_the_strict_reader(
    name: str, value: object
) -> None:
    assert frames._usual_commit(body_of(message(COMMIT, commit_body() | {name: value}))) is None


VALUES = [
    None, True, False, 0, 1, -1, 2**64 - 1, "", "x", "create", "update", "delete", "a.b.c/x",
    DID, "3laaaaaaaaaaa", b"", b"car", CID, cbrrr.CID(bytes([1, 0x55, 0x12, 0x20]) + bytes(32)),
    [], {}, [{}], [{"action": "create", "path": "a.b.c/x", "cid": CID}],
]  # fmt: skip


def test_the_fast_path_accepts_only_what_the_strict_reader_accepts() -> None:
    """Commit bodies with fields and op fields replaced, dropped or added at random: the
    fast path either declines (None) or returns the strict reader's frame."""
    rng = random.Random(16)
    names = [*commit_body(), "prevData", "x"]
    op_names = ["action", "path", "cid", "prev", "x"]
    accepted = 0
    for _ in range(3000):
        body = rng.choice(usual_bodies())
        for _ in range(rng.randint(1, 3)):
            ops = body.get("ops")
            if rng.random() < 0.5 and type(ops) is list and ops and type(ops[0]) is dict:
                ops = [dict(op) for op in ops]
                op = rng.choice(ops)
                name = rng.choice(op_names)
                if rng.random() < 0.2:
                    op.pop(name, None)
                else:
                    op[name] = rng.choice(VALUES)
                body = body | {"ops": ops}
            elif rng.random() < 0.2:
                body = {k: v for k, v in body.items() if k != rng.choice(names)}
            else:
                body = body | {rng.choice(names): rng.choice(VALUES)}
        decoded = body_of(message(COMMIT, body))
        fast = frames._usual_commit(decoded)
        if fast is not None:
            accepted += 1
            assert fast == strict_commit(decoded), body
    assert accepted > 100


def test_slot_setters_must_name_every_field() -> None:
    with pytest.raises(TypeError):
        slots.setters(RepoOp, "action", "path", "cid")
    with pytest.raises(TypeError):
        slots.setters(RepoOp, "action", "path", "cid", "prev", "other")
    set_action, set_path, set_cid, set_prev = slots.setters(RepoOp, "action", "path", "cid", "prev")
    op = slots.new(RepoOp)
    for setter, value in [(set_action, "delete"), (set_path, "a.b.c/x"), (set_cid, None)]:
        setter(op, value)
    set_prev(op, CID.cid_bytes)
    assert op == RepoOp("delete", "a.b.c/x", None, CID.cid_bytes)
    assert hash(op) == hash(RepoOp("delete", "a.b.c/x", None, CID.cid_bytes))


# -- peek: the C reader against the Python one ---------------------------------------------

PEEK_ODDITIES = [
    ({"op": 1, "t": 7}, {"seq": 3, "repo": DID}),  # a type that is not text
    ({"op": 1, "t": "#commit"}, {"seq": True, "repo": DID}),  # a bool is no seq
    ({"op": 1, "t": "#commit"}, {"seq": -4, "repo": DID}),
    ({"op": 1, "t": "#commit"}, {"seq": 2**63, "repo": DID}),
    ({"op": 1, "t": "#identity"}, {"seq": 3, "repo": 5, "did": DID}),  # `repo` wins, not text
    ({"op": 1, "t": "#identity"}, {"seq": 3, "did": DID, "x": {"a": [1, None, b"b", CID]}}),
    ({"op": 1, "t": "#identity"}, {"seq": 3, "did": DID, "f": 1.5}),  # a float: declined
    ({"op": -1}, {"error": "FutureCursor"}),
    ({"op": 1, "t": "#commit"}, {}),
]


@pytest.mark.parametrize(
    "data",
    [encode_frame(f) for f in FRAMES]  # type: ignore[arg-type]
    + [message(h, b) for h, b in PEEK_ODDITIES]
    + [message({"op": 1, "t": "#commit"}, {"seq": 1}) + b"\x00", b"", b"\xa0", b"\xa0\x01"],
)
def test_peek_in_c_reads_what_libipld_reads(data: bytes) -> None:
    assert frames.peek(data) == frames._peek_python(data)


@pytest.mark.parametrize(
    ("header", "body", "hints"),
    [
        ({"op": 1, "t": "#commit"}, {"seq": -4, "repo": DID}, ("#commit", -4, DID)),
        ({"op": 1, "t": "#commit"}, {"seq": 2**63, "repo": DID}, ("#commit", 2**63, DID)),
        ({"op": 1, "t": 7}, {"seq": 3, "repo": DID}, (None, 3, DID)),
        ({"op": 1, "t": "#commit"}, {"seq": True, "repo": DID}, ("#commit", None, DID)),
        ({"op": 1, "t": "#identity"}, {"seq": 3, "repo": 5, "did": DID}, ("#identity", 3, None)),
        ({"op": 1, "t": "#identity"}, {"seq": 3, "did": DID}, ("#identity", 3, DID)),
        ({"op": -1}, {"error": "FutureCursor"}, (None, None, None)),
    ],
)
def test_peek_in_c_reads_odd_values_itself(header: dict, body: dict, hints: tuple) -> None:
    """Not declined to libipld: the C reader's own answer."""
    assert frames._peek_frame is not None, "make builds the C module (test_fastrepo.py)"
    assert frames._peek_frame(message(header, body)) == hints


def test_peek_in_c_declines_what_it_does_not_read() -> None:
    assert frames._peek_frame is not None
    float_body = message({"op": 1, "t": "#identity"}, {"seq": 3, "did": DID, "f": 1.5})
    assert frames._peek_frame(float_body) is None  # libipld reads floats
    assert frames._peek_frame("not bytes") is None  # type: ignore[arg-type]
    twice = message({"op": 1, "t": "#commit"}, {"seq": 1}) * 2  # four values, not two
    assert frames._peek_frame(twice) is None


def test_peek_in_c_agrees_on_damaged_frames() -> None:
    """Wherever libipld still reads a damaged frame, the C reader either reads the same
    hints or declines (then `peek` asks libipld). It may read hints from a frame libipld
    refuses (it checks only what it reads): hints, which the strict decoding overrules."""
    assert frames._peek_frame is not None, "make builds the C module (test_fastrepo.py)"
    rng = random.Random(16)
    originals = [encode_frame(f) for f in FRAMES]  # type: ignore[arg-type]
    compared = 0
    for _ in range(3000):
        data = bytearray(rng.choice(originals))
        for _ in range(rng.randint(1, 3)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        try:
            libipld.decode_dag_cbor_multi(bytes(data))
        except Exception:
            continue  # refused by libipld: the C reader's hints are not compared
        fast = frames._peek_frame(bytes(data))
        if fast is not None:
            assert fast == frames._peek_python(bytes(data)), bytes(data).hex()
            compared += 1
    assert compared > 500

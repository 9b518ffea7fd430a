"""A whole `#commit` message in one C call (`_fastrepo_event.h`, through
`stream.commit_event.read_commit_event`) against its definition, the Python path:
`frames.decode_frame`, then `commit.verify_commit(frame, None, check_proof=False)` on the
pure-Python decoder. For every message, the C module gives the same frame and the same
VerifiedCommit (down to each createdAt's offset), or declines (None; a slice it is not sure
about: a frame and None); it never answers where the definition refuses. Usual commits must
take the C path whole, else it would be dead code that passes every comparison.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

import cbrrr
import pytest

from skyfill.atproto import fastrepo
from skyfill.atproto.car import read_car, write_car
from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.stream.commit import verify_commit
from skyfill.atproto.stream.commit_event import read_commit_event
from skyfill.atproto.stream.encode import encode_frame
from skyfill.atproto.stream.frames import CommitFrame, FrameError, RepoOp, decode_frame
from skyfill.firehose.decoding import decode_message
from tests.atproto.fuzzing import mutate_block, mutate_car, sample_records
from tests.atproto.stream.builder import CREATED_AT_FORMS, RepoWriter, post, writer_with_posts
from tests.atproto.stream.builder import record_path as path

pytestmark = pytest.mark.skipif(not fastrepo.AVAILABLE, reason="needs the built C module")

POST = "app.bsky.feed.post"
LIKE = "app.bsky.feed.like"
Keep = Any


@pytest.fixture
def writer() -> RepoWriter:
    return writer_with_posts(40, POST)


def definition(message: bytes, keep: Keep, mp: pytest.MonkeyPatch) -> tuple[object, object]:
    """(frame or FrameError text, VerifiedCommit or the InvalidRepo's kind and text, or None
    where no check is made) by the pure-Python path."""
    mp.setattr(fastrepo, "ENABLED", False)
    try:
        frame = decode_frame(message)
    except FrameError as refused:
        return f"FrameError: {refused}", None
    finally:
        mp.setattr(fastrepo, "ENABLED", True)
    if not isinstance(frame, CommitFrame) or frame.too_big:
        return frame, None
    mp.setattr(fastrepo, "ENABLED", False)
    try:
        return frame, verify_commit(frame, None, keep_collection=keep, check_proof=False)
    except InvalidRepo as refused:
        return frame, (refused.kind, str(refused))
    finally:
        mp.setattr(fastrepo, "ENABLED", True)


def agrees(message: bytes, mp: pytest.MonkeyPatch, keep: Keep = None) -> str:
    """Assert the C answer matches the definition; say how far the C module went:
    `whole` (frame and check), `frame` (the check declined), `declined`."""
    frame, checked = definition(message, keep, mp)
    fast = read_commit_event(message, keep, check=True)
    if fast is None:
        return "declined"
    assert fast[0] == frame  # never a frame where the definition refuses the message
    if fast[1] is None:
        return "frame"
    assert fast[1] == checked  # never a check passed that the definition refuses
    assert fast[1].puts == checked.puts  # type: ignore[union-attr]
    for ours, theirs in zip(fast[1].puts, checked.puts, strict=True):  # type: ignore[union-attr]
        assert repr(ours.created_at) == repr(theirs.created_at)  # the same offset, too
    return "whole"


def test_usual_commits_take_the_c_path_whole(
    writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(5)
    frames = [RepoWriter().commit({path(POST, 0): post("first")})]  # no prevData, no since
    for i in range(30):
        present = sorted(writer.records)
        puts = {path(rnd.choice([POST, LIKE]), 100 + i * 3 + j): post(f"n{i}") for j in range(3)}
        puts |= {p: post(f"edit {i}") for p in rnd.sample(present, rnd.randint(0, 2))}
        deletes = [p for p in rnd.sample(present, rnd.randint(0, 3)) if p not in puts]
        frames.append(writer.commit(puts, deletes))
    frames.append(writer.commit(None, [sorted(writer.records)[0]]))  # a delete alone
    for frame in frames:
        message = encode_frame(frame)
        for keep in (None, lambda c: c == LIKE, lambda c: False):
            assert agrees(message, monkeypatch, keep) == "whole"
        assert read_commit_event(message, None, check=False) == (frame, None)


def test_the_stream_decoder_takes_it_and_gives_what_it_gave_before(
    writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = encode_frame(writer.commit({path(POST, 900): post("x")}, [path(POST, 1)]))
    fast = decode_message(message, {}, verify=False, keep_collection=None)
    monkeypatch.setattr(fastrepo, "ENABLED", False)
    assert decode_message(message, {}, verify=False, keep_collection=None) == fast
    assert fast[1] is not None and fast[1].key is None


def test_sample_records_agree(writer: RepoWriter, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = set()
    for record_path, record in sample_records(60, seed=6).items():
        answers.add(agrees(encode_frame(writer.commit({record_path: record})), monkeypatch))
    assert "whole" in answers


@pytest.mark.parametrize("created", CREATED_AT_FORMS)
def test_created_at_of_every_form_agrees(
    created: object, writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    record = {"$type": POST, "text": "t", "createdAt": created}
    assert agrees(encode_frame(writer.commit({path(POST, 500): record})), monkeypatch) == "whole"


def _message(header: dict, body: dict) -> bytes:
    return cbrrr.encode_dag_cbor(header) + cbrrr.encode_dag_cbor(body)


def _body(frame: CommitFrame) -> dict:
    return cbrrr.decode_dag_cbor(encode_frame(frame)[len(cbrrr.encode_dag_cbor(_HEAD)) :])


_HEAD = {"op": 1, "t": "#commit"}


def test_odd_frames_are_declined_or_read_alike(
    writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = writer.commit({path(POST, 700): post("a")}, [path(POST, 2)])
    body = _body(frame)
    op = body["ops"][0]
    odd = {
        "an unknown field": {**body, "extra": {"b": [1, "x", None, True]}},
        "null since and prevData": {**body, "since": None, "prevData": None},
        "tooBig": {**body, "tooBig": True},
        "no blobs": {k: v for k, v in body.items() if k != "blobs"},
        "a did:web": {**body, "repo": "did:web:example.com"},
        "a bad DID": {**body, "repo": "did:plc:"},
        "a bad rev": {**body, "rev": "notatid"},
        "a bad since": {**body, "since": "3zzzzzzzzzzzzz"},
        "a negative seq": {**body, "seq": -1},
        "a text seq": {**body, "seq": "1"},
        "no ops": {k: v for k, v in body.items() if k != "ops"},
        "no time": {k: v for k, v in body.items() if k != "time"},
        "a delete with a cid": {**body, "ops": [{**op, "action": "delete"}]},
        "a create without a cid": {**body, "ops": [{**op, "cid": None}]},
        "an unknown action": {**body, "ops": [{**op, "action": "upsert"}]},
        "a bytes path": {**body, "ops": [{**op, "path": op["path"].encode()}]},
        "a raw-codec cid": {**body, "commit": cbrrr.CID(b"\x01\x55" + bytes(frame.commit[2:]))},
        "a float": {**body, "extra": 1.5},
        "the same path twice": {**body, "ops": [op, op]},
        "a path without a slash": {**body, "ops": [{**op, "path": "app.bsky.feed.post"}]},
        "a bad collection": {**body, "ops": [{**op, "path": "app/3l000aaaaaaaa"}]},
        "a bad rkey": {**body, "ops": [{**op, "path": f"{POST}/.."}]},
        "another commit": {**body, "commit": cbrrr.CID(frame.ops[0].cid)},
    }
    answers = {name: agrees(_message(_HEAD, b), monkeypatch) for name, b in odd.items()}
    for header in ({"op": -1}, {"op": 1, "t": "#sync"}, {"op": 1}, {"op": 2, "t": "#commit"}):
        assert agrees(_message(header, body), monkeypatch) == "declined"
    assert agrees(encode_frame(frame) + b"\x00", monkeypatch) == "declined"
    assert answers["an unknown field"] == "whole"
    assert answers["null since and prevData"] == "whole"
    assert answers["no blobs"] == "whole"
    assert answers["tooBig"] == "frame"
    assert answers["the same path twice"] == "frame"
    assert answers["another commit"] == "frame"
    for name in ("a did:web", "a bad DID", "a negative seq", "no ops", "a float"):
        assert answers[name] == "declined", name


def test_keys_out_of_canonical_order_are_left_to_libipld(
    writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    message = encode_frame(writer.commit({path(POST, 701): post("a")}))
    header = cbrrr.encode_dag_cbor(_HEAD)
    assert header == b"\xa2\x61t\x67#commit\x62op\x01"
    swapped = b"\xa2\x62op\x01\x61t\x67#commit" + message[len(header) :]
    assert read_commit_event(swapped, None, check=True) is None
    agrees(swapped, monkeypatch)


def test_damaged_messages_and_slices_are_judged_alike(
    writer: RepoWriter, monkeypatch: pytest.MonkeyPatch
) -> None:
    rnd = random.Random(12)
    frame = writer.commit({path(POST, 800): post("a"), path(LIKE, 801): post("b")}, [path(POST, 3)])
    message = encode_frame(frame)
    answers = []
    for _ in range(400):  # the message's bytes
        damaged = bytearray(message)
        for _ in range(rnd.randint(1, 3)):
            damaged[rnd.randrange(len(damaged))] = rnd.randrange(256)
        answers.append(agrees(bytes(damaged), monkeypatch))
    for _ in range(200):  # the slice, the frame around it intact
        slice_ = mutate_car(frame.blocks, rnd, rounds=rnd.randint(1, 2))
        answers.append(agrees(encode_frame(replace(frame, blocks=slice_)), monkeypatch))
    record = _blocks(frame.blocks)[frame.ops[0].cid]  # type: ignore[index]
    for _ in range(200):  # a record block, its CID following it
        answers.append(agrees(_with_record(frame, mutate_block(record, rnd)), monkeypatch))
    assert {"whole", "frame", "declined"} <= set(answers)


def _blocks(car: bytes) -> dict[bytes, bytes]:
    return dict(read_car(car).blocks)


def _with_record(frame: CommitFrame, block: bytes) -> bytes:
    old = frame.ops[0].cid
    cid = cid_for_block(block)
    blocks = [(c, b) for c, b in _blocks(frame.blocks).items() if c != old] + [(cid, block)]
    op = RepoOp(frame.ops[0].action, frame.ops[0].path, cid, frame.ops[0].prev)
    car = write_car([frame.commit], blocks)
    return encode_frame(replace(frame, blocks=car, ops=(op, *frame.ops[1:])))

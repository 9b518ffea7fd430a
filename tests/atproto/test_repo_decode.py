"""CAR parsing, MST walk and record decoding on repos built by the simulated network."""

from __future__ import annotations

import random

import cbrrr
import orjson
import pytest

from skyfill.atproto.car import read_car, write_car
from skyfill.atproto.cid import cid_for_block, cid_from_str, cid_to_str
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.mst import build, key_layer, walk
from skyfill.atproto.repo import build_repo, decode_repo
from skyfill.simnet.accounts import generate_records
from skyfill.simnet.network import corrupt_block, drop_block

DID = "did:plc:abcdefghijklmnopqrstuvwx"


@pytest.fixture(scope="module")
def records() -> dict[str, dict]:
    return generate_records(random.Random(3), 500, [DID])


def test_decode_returns_every_record_with_its_cid(records: dict[str, dict]) -> None:
    car, commit, paths = build_repo(DID, "3kabcdefghijk", records)
    repo = decode_repo(car, expected_did=DID)
    got = {
        f"{c}/{r}": cid for c, r, cid in zip(repo.collections, repo.rkeys, repo.cids, strict=True)
    }
    assert got == paths
    assert repo.commit.rev == "3kabcdefghijk"
    assert repo.commit.cid == commit


def test_links_and_bytes_stay_apart() -> None:
    link = cid_for_block(b"an image")
    record = {
        "$type": "com.example.thing",
        "ref": cbrrr.CID(link),
        "blob": b"\x00\x01\xff",
        "createdAt": "2025-03-04T05:06:07.123Z",
    }
    car, _, _ = build_repo(DID, "3kabcdefghijk", {"com.example.thing/a": record})
    repo = decode_repo(car, expected_did=DID)
    value = orjson.loads(repo.records[0])
    assert value["ref"] == {"$link": cid_to_str(link)}
    assert value["blob"] == {"$bytes": "AAH/"}
    assert repo.created_at[0].isoformat() == "2025-03-04T05:06:07.123000+00:00"


def test_invalid_created_at_is_null() -> None:
    recs = {
        "com.example.a/x": {"createdAt": "yesterday"},
        "com.example.a/y": {"text": "no date"},
        "com.example.a/z": {"createdAt": "2025-01-01T00:00:00"},
    }  # no timezone: invalid
    repo = decode_repo(build_repo(DID, "3kabcdefghijk", recs)[0])
    assert repo.created_at == [None, None, None]


def test_empty_repo_decodes_to_no_records() -> None:
    repo = decode_repo(build_repo(DID, "3kabcdefghijk", {})[0], expected_did=DID)
    assert len(repo) == 0


def test_mst_walk_yields_sorted_keys_across_layers() -> None:
    blocks: dict[bytes, bytes] = {}
    keys = sorted({f"com.example.x/{i:06d}".encode() for i in range(3000)})
    items = [(k, cid_for_block(k)) for k in keys]
    root = build(items, blocks)
    assert max(key_layer(k) for k in keys) >= 2  # the tree really has several layers
    assert [k for k, _ in walk(blocks.__getitem__, root)] == keys


def test_block_that_does_not_match_its_cid_is_invalid(records: dict[str, dict]) -> None:
    car, _, paths = build_repo(DID, "3kabcdefghijk", records)
    bad = corrupt_block(car, next(iter(paths.values())))
    with pytest.raises(InvalidRepo, match="does not match its CID"):
        decode_repo(bad, expected_did=DID)


def test_missing_block_is_invalid(records: dict[str, dict]) -> None:
    car, _, paths = build_repo(DID, "3kabcdefghijk", records)
    with pytest.raises(InvalidRepo, match="missing block"):
        decode_repo(drop_block(car, next(iter(paths.values()))), expected_did=DID)


@pytest.mark.parametrize("fraction", [0.0, 0.01, 0.5, 0.99])
def test_truncated_car_is_invalid(records: dict[str, dict], fraction: float) -> None:
    car, _, _ = build_repo(DID, "3kabcdefghijk", records)
    with pytest.raises(InvalidRepo):
        decode_repo(car[: int(len(car) * fraction)], expected_did=DID)


def test_garbage_is_invalid() -> None:
    for data in (b"\x00", b"hello world, not a car", random.Random(1).randbytes(5000)):
        with pytest.raises(InvalidRepo):
            decode_repo(data)


def test_repo_of_another_did_is_invalid(records: dict[str, dict]) -> None:
    car, _, _ = build_repo(DID, "3kabcdefghijk", records)
    with pytest.raises(InvalidRepo, match="belongs to"):
        decode_repo(car, expected_did="did:plc:zzzzzzzzzzzzzzzzzzzzzzzz")


def test_mst_with_keys_out_of_order_is_invalid() -> None:
    value = cbrrr.CID(cid_for_block(b"v"))
    node = {
        "l": None,
        "e": [
            {"p": 0, "k": b"b/2", "v": value, "t": None},
            {"p": 0, "k": b"a/1", "v": value, "t": None},
        ],
    }
    block = cbrrr.encode_dag_cbor(node)
    blocks = {cid_for_block(block): block}
    with pytest.raises(InvalidRepo):
        list(walk(blocks.__getitem__, cid_for_block(block)))


def test_car_round_trip() -> None:
    blocks = [(cid_for_block(b"x" * i), b"x" * i) for i in range(1, 50)]
    car = read_car(write_car([blocks[0][0]], blocks))
    assert car.roots == [blocks[0][0]]
    assert car.blocks == dict(blocks)


def test_car_headers_other_than_the_usual_one_read_alike() -> None:
    """read_car skips the decoder for the usual header (one DAG-CBOR sha-256 root): other
    roots still read as the decoder reads them, and a changed version is refused."""
    block = b"\xa0"
    cid = cid_for_block(block)
    raw = bytes([1, 0x55, 0x12, 0x20]) + cid[4:]
    for roots in ([cid], [raw], [cid, raw]):
        car = read_car(write_car(roots, [(cid, block)]))
        assert (car.roots, car.blocks) == (roots, {cid: block})
    usual = write_car([cid], [])
    assert read_car(usual).roots == [cid]
    with pytest.raises(InvalidRepo, match="not a CAR v1"):
        read_car(usual[:-1] + b"\x02")


def test_cid_string_round_trip() -> None:
    cid = cid_for_block(b"hello")
    assert cid_to_str(cid).startswith("bafyrei")
    assert cid_from_str(cid_to_str(cid)) == cid

"""The C decoder (`atproto/_fastrepo.c`, through `backfill.decode.decode_to_table`) against
its definition, the Python decoder: for every input, the same table or the same
InvalidRepo. Valid repositories must take the fast path (else the C module would be
dead code that passes every comparison); anything odd may be declined, never decoded
differently.
"""

from __future__ import annotations

import random

import cbrrr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyfill.atproto import fastrepo
from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.repo import build_repo
from skyfill.backfill.decode import DecodedRepo, decode_to_table
from skyfill.simnet.accounts import generate_records
from tests.atproto.fuzzing import (
    DID,
    REV,
    base_cars,
    mutate_block,
    mutate_car,
    repo_with_blocks,
    repo_with_root,
    sample_records,
)

PATH = "app.bsky.feed.post/3kabcdefghijk"
LINK = cbrrr.CID(cid_for_block(b"an image"))
BASES = base_cars()


def _decode(
    car: bytes, pure: bool, monkeypatch: pytest.MonkeyPatch, **options: object
) -> DecodedRepo | tuple[str, object, str]:
    monkeypatch.setattr(fastrepo, "ENABLED", not pure)
    try:
        return decode_to_table(car, DID, "job", **options)  # type: ignore[arg-type]
    except InvalidRepo as refused:
        return ("invalid", refused.kind, str(refused))


def same_either_way(car: bytes, monkeypatch: pytest.MonkeyPatch, **options: object) -> object:
    """Decode with both paths; they must agree. Returns the reference result."""
    reference = _decode(car, True, monkeypatch, **options)
    fast = _decode(car, False, monkeypatch, **options)
    if isinstance(reference, DecodedRepo):
        assert isinstance(fast, DecodedRepo), fast
        assert (fast.rev, fast.commit_cid, fast.record_count) == (
            reference.rev,
            reference.commit_cid,
            reference.record_count,
        )
        assert fast.table.schema == reference.table.schema
        assert fast.by_collection() == reference.by_collection()
        # (equals, not to_pylist: a createdAt past 9999-12-31 UTC has no Python datetime)
        assert fast.table.equals(reference.table), _first_difference(fast, reference)
    else:
        assert fast == reference
    return reference


def _first_difference(fast: DecodedRepo, reference: DecodedRepo) -> str:
    for name in reference.table.column_names:
        ours, theirs = fast.table[name], reference.table[name]
        if not ours.equals(theirs):
            return f"column {name}: {ours.to_string()[:400]} != {theirs.to_string()[:400]}"
    return "tables differ"


def takes_fast_path(car: bytes, did: str = DID) -> bool:
    return fastrepo.decode_columns(car, did) is not None


def test_the_c_module_is_built_into_this_install() -> None:
    # setup.py builds it optionally; a missing compiler or libssl-dev must show here.
    assert fastrepo.AVAILABLE


@pytest.mark.parametrize("count", [0, 1, 40, 2500])
def test_generated_repos_decode_the_same_on_the_fast_path(
    count: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    rng = random.Random(count)
    records = generate_records(rng, count, [f"did:plc:peer{i}" for i in range(9)])
    car = build_repo(DID, REV, records)[0]
    reference = same_either_way(car, monkeypatch)
    assert isinstance(reference, DecodedRepo) and reference.record_count == len(records)
    monkeypatch.setattr(fastrepo, "ENABLED", True)
    assert takes_fast_path(car)
    # both ways of indexing are taken: with the GIL (small CARs) and without (big ones)
    assert fastrepo._fastrepo is not None
    big = len(car) >= fastrepo._fastrepo.RELEASE_GIL_BYTES
    assert big == (count == 2500), (count, len(car))


def test_collection_filter_and_window_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    records = generate_records(random.Random(5), 600, ["did:plc:peer"])
    car = build_repo(DID, REV, records)[0]
    kept = same_either_way(car, monkeypatch, collections=["app.bsky.feed.*"])
    windowed = same_either_way(car, monkeypatch, since="2024-06-01T00:00:00+00:00")
    assert isinstance(kept, DecodedRepo) and 0 < kept.table.num_rows < len(records)
    assert isinstance(windowed, DecodedRepo) and 0 < windowed.table.num_rows < len(records)


@pytest.mark.parametrize(
    "created",
    [
        "2025-03-04T05:06:07.123Z",
        "2024-02-29T23:59:59.999Z",
        "2023-02-29T00:00:00.000Z",  # no such day
        "0000-01-01T00:00:00.000Z",  # valid syntax, before year 1
        "2025-13-01T00:00:00.000Z",
        "2025-03-04T24:00:00.000Z",
        "2025-03-04T05:06:60.000Z",
        "2025-03-04T05:06:07Z",
        "2025-03-04T05:06:07.123456789+05:30",
        "2025-03-04T05:06:07.123-00:00",
        "2025-03-04T05:06:07.123+00:00",
        "2025-03-04T05:06:07.9999999Z",
        "2025-03-04T05:06:07.1Z",
        "2025-03-04T05:06:07.Z",
        "2025-03-04T05:06:07+23:59",
        "2025-03-04T05:06:07-23:59",
        "2025-03-04T05:06:07+24:00",
        "2025-03-04T05:06:07+05:60",
        "1969-12-31T23:59:59.999999Z",
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:30:00+01:00",
        "0001-01-01T00:30:00-01:00",
        "9999-12-31T23:59:59.999999Z",
        "9999-12-31T23:59:59.999999-23:59",
        "2025-03-04T05:06:07.1234567890123456789012345678901234567890123456Z",
        "2025-03-04T05:06:07.12345678901234567890123456789012345678901234567Z",
        "2025-03-04 05:06:07.123Z",
        "2025-03-04T05:06:07.12aZ",
        "garbage",
        "",
        17,
        None,
        ["2025-03-04T05:06:07.123Z"],
    ],
)
def test_created_at_of_every_form_agrees(created: object, monkeypatch: pytest.MonkeyPatch) -> None:
    record = {"$type": "app.bsky.feed.post", "text": "hi", "createdAt": created}
    car = build_repo(DID, REV, {PATH: record})[0]
    same_either_way(car, monkeypatch)
    monkeypatch.setattr(fastrepo, "ENABLED", True)
    assert takes_fast_path(car)


@pytest.mark.parametrize(
    ("name", "block", "fast"),
    [
        ("keys in length-first order", b"\xa2\x61b\x01\x62aa\x02", True),
        ("keys in bytewise order only", b"\xa2\x62aa\x02\x61b\x01", False),
        ("a repeated key", b"\xa2\x61a\x01\x61a\x02", False),
        ("a $link key", b"\xa1\x65$link\x01", False),
        ("a $bytes key", b"\xa1\x66$bytes\x01", False),
        ("another $ key", b"\xa1\x64$foo\x01", False),
        ("a float", b"\xa1\x61a\xfb" + bytes(8), False),
        ("an integer not minimally encoded", b"\xa1\x61a\x18\x01", False),
        ("the largest unsigned integer", b"\xa1\x61a\x1b" + b"\xff" * 8, True),
        ("the smallest signed integer", b"\xa1\x61a\x3b\x7f" + b"\xff" * 7, True),
        ("below the smallest signed integer", b"\xa1\x61a\x3b\x80" + bytes(7), False),
        ("undefined", b"\xa1\x61a\xf7", False),
        ("an indefinite-length string", b"\xa1\x61a\x7f\x61x\xff", False),
        ("a tag other than 42", b"\xa1\x61a\xc1\x00", False),
        ("invalid UTF-8", b"\xa1\x61a\x62\xc3\x28", False),
        ("an encoded surrogate", b"\xa1\x61a\x63\xed\xa0\x80", False),
        ("trailing bytes", b"\xa1\x61a\x01\x00", False),
        ("not a map", b"\x82\x01\x02", False),
        ("control characters and quotes", b'\xa1\x61a\x68\x00\x01\x1f\x7f"\\\n\t', True),
        ("deep nesting", b"\xa1\x61a" + b"\x81" * 100 + b"\x00", True),
        ("nesting too deep for JSON", b"\xa1\x61a" + b"\x81" * 254 + b"\x00", False),
    ],
)
def test_record_edge_cases_agree_and_odd_ones_are_declined(
    name: str, block: bytes, fast: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    car = repo_with_blocks({PATH: block})
    same_either_way(car, monkeypatch)
    monkeypatch.setattr(fastrepo, "ENABLED", True)
    assert takes_fast_path(car) is fast


_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=12),
        st.binary(max_size=12),
        st.just(LINK),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(
            st.one_of(st.text(max_size=6), st.sampled_from(["$type", "$link", "createdAt"])),
            inner,
            max_size=4,
        ),
    ),
    max_leaves=24,
)


@given(st.dictionaries(st.text(max_size=8), _VALUES, max_size=6))
def test_any_record_value_decodes_the_same(value: dict) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        same_either_way(repo_with_blocks({PATH: cbrrr.encode_dag_cbor(value)}), monkeypatch)


@given(st.sampled_from(range(len(BASES))), st.randoms(use_true_random=False), st.integers(1, 3))
def test_mutated_repos_decode_the_same_or_fail_the_same(
    base: int, rnd: random.Random, rounds: int
) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        same_either_way(mutate_car(BASES[base], rnd, rounds), monkeypatch)


@given(st.randoms(use_true_random=False))
def test_mutated_record_blocks_decode_the_same_or_fail_the_same(rnd: random.Random) -> None:
    value = next(iter(sample_records(1, seed=rnd.randrange(100)).values()))
    block = mutate_block(cbrrr.encode_dag_cbor(value), rnd)
    with pytest.MonkeyPatch.context() as monkeypatch:
        same_either_way(repo_with_blocks({PATH: block}), monkeypatch)


def test_wrong_did_and_bad_signature_are_the_python_verdicts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    car = build_repo("did:plc:someoneelse", REV, sample_records(3))[0]
    reference = same_either_way(car, monkeypatch)
    assert isinstance(reference, tuple) and reference[0] == "invalid"
    signed = build_repo(DID, REV, sample_records(3))[0]  # 64 zero bytes of signature
    key = "did:key:zQ3shokFTS3brHcDQrn82RUDfCZESWL1ZdCEJwekUDPQiYBme"
    reference = same_either_way(signed, monkeypatch, signing_key=key)
    assert isinstance(reference, tuple) and reference[0] == "invalid"


def test_an_mst_node_claiming_a_huge_entry_count_is_declined_not_trusted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # {"e": array of 2**61 entries (8-byte count), "l": null}: the C walk must not size an
    # allocation by it (2**61 * 24 bytes wraps around); the Python path gives the verdict
    node = b"\xa2\x61e\x9b" + (2**61).to_bytes(8, "big") + b"\x61l\xf6"
    blocks = {cid_for_block(node): node}
    car = repo_with_root(cid_for_block(node), blocks)
    reference = same_either_way(car, monkeypatch)
    assert isinstance(reference, tuple) and reference[0] == "invalid"
    monkeypatch.setattr(fastrepo, "ENABLED", True)
    assert not takes_fast_path(car)

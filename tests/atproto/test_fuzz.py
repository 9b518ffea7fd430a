"""Property tests of the repo decoder: whatever the bytes, it returns records or raises
InvalidRepo, never another exception, never a hang. Short by default (the `ci` hypothesis
profile in tests/conftest.py); benchmarks/fuzz.py runs the same targets for minutes.

The regression tests at the end are the minimal inputs of what fuzzing found.
"""

from __future__ import annotations

import random
import time

import cbrrr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyfill.atproto import mst
from skyfill.atproto.car import write_car
from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.repo import decode_repo
from tests.atproto.fuzzing import (
    DID,
    base_cars,
    car_sections,
    getter,
    index_nodes,
    keys_at_layer,
    mst_blocks,
    mutate_block,
    mutate_car,
    repo_with_blocks,
    repo_with_root,
    sample_records,
    target_decode_repo,
    target_read_car,
    target_walk,
)

BASES = base_cars()
PATH = "app.bsky.feed.post/3kabcdefghijk"
VALUE = cid_for_block(b"a record")


# --- CAR bytes -----------------------------------------------------------------------------


@given(st.binary(max_size=600))
def test_random_bytes_are_a_car_or_invalid_repo(data: bytes) -> None:
    target_read_car(data)


@given(st.sampled_from(range(len(BASES))), st.binary(max_size=300))
def test_a_valid_header_and_random_sections_are_a_car_or_invalid_repo(
    base: int, rest: bytes
) -> None:
    header, _ = car_sections(BASES[base])
    target_read_car(header + rest)
    target_decode_repo(header + rest)


@given(st.sampled_from(range(len(BASES))), st.randoms(use_true_random=False), st.integers(1, 4))
def test_mutated_repo_decodes_or_raises_invalid_repo(
    base: int, rnd: random.Random, rounds: int
) -> None:
    target_decode_repo(mutate_car(BASES[base], rnd, rounds))


def test_reordered_and_duplicated_blocks_still_decode() -> None:
    header, blocks = car_sections(BASES[2])
    reordered = header + b"".join(reversed(blocks)) + blocks[0]
    assert len(decode_repo(reordered, DID)) == len(decode_repo(BASES[2], DID)) > 0


# --- MST nodes -----------------------------------------------------------------------------

_JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**64) + 1, 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=4),
    st.binary(max_size=40),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(0, 3), max_size=2),
)
_KEYS = st.one_of(
    st.sampled_from([b"a/b", b"app.bsky.feed.post/", b"com.example.a/00000000", b"/"]),
    st.binary(max_size=24),
)


@st.composite
def _random_nodes(draw: st.DrawFn) -> list[dict]:
    count = draw(st.integers(1, 5))
    nodes: list[dict] = []
    for i in range(count):

        def link(i: int = i) -> st.SearchStrategy:
            below = [st.just(("node", j)) for j in range(i)]
            return st.one_of(st.none(), _JUNK, st.just(("cid", VALUE)), *below)

        entry = st.fixed_dictionaries(
            {"p": st.one_of(st.integers(0, 30), _JUNK), "k": st.one_of(_KEYS, _JUNK)},
            optional={"v": st.one_of(st.just(("cid", VALUE)), _JUNK), "t": link()},
        )
        node = draw(
            st.fixed_dictionaries(
                {}, optional={"l": link(), "e": st.one_of(st.lists(entry, max_size=5), _JUNK)}
            )
        )
        nodes.append(node)
    return nodes


@given(_random_nodes())
def test_random_mst_nodes_walk_or_raise_invalid_repo(nodes: list[dict]) -> None:
    blocks, root = mst_blocks(nodes)
    target_walk(blocks, root)


def _valid_tree() -> list[dict]:
    blocks: dict[bytes, bytes] = {}
    items = sorted((path.encode(), VALUE) for path in sample_records(60))
    return index_nodes(blocks, mst.build(items, blocks))


TREE = _valid_tree()


@given(st.data())
def test_mutated_mst_walks_or_raises_invalid_repo(data: st.DataObject) -> None:
    nodes = [dict(node, e=[dict(entry) for entry in node["e"]]) for node in TREE]
    for _ in range(data.draw(st.integers(1, 3))):
        i = data.draw(st.integers(0, len(nodes) - 1))
        node = nodes[i]
        links = st.sampled_from([("node", j) for j in range(i)] or [None])
        what = data.draw(st.sampled_from(["l", "entry", "drop", "copy"]))
        if what == "l":
            node["l"] = data.draw(st.one_of(links, _JUNK))
        elif not node["e"]:
            continue
        elif what == "drop":
            del node["e"][data.draw(st.integers(0, len(node["e"]) - 1))]
        elif what == "copy":
            entry = data.draw(st.sampled_from(node["e"]))
            node["e"].insert(data.draw(st.integers(0, len(node["e"]))), dict(entry))
        else:
            entry = data.draw(st.sampled_from(node["e"]))
            field = data.draw(st.sampled_from(["p", "k", "v", "t"]))
            entry[field] = data.draw(st.one_of(links, _KEYS, _JUNK))
    blocks, root = mst_blocks(nodes)
    target_walk(blocks, root)


def test_unmutated_tree_walks() -> None:
    blocks, root = mst_blocks(TREE)
    assert len(mst.collect(getter(blocks), root)[0]) == 60


# --- commits -----------------------------------------------------------------------------

_TREE_BLOCKS, _TREE_ROOT = mst_blocks(TREE)


@given(
    st.fixed_dictionaries(
        {},
        optional={
            "did": st.one_of(st.just(DID), _JUNK),
            "version": st.one_of(st.sampled_from([2, 3, 3.0]), _JUNK),
            "data": st.one_of(st.just(cbrrr.CID(_TREE_ROOT)), st.just(cbrrr.CID(VALUE)), _JUNK),
            "rev": st.one_of(st.just("3kabcdefghijk"), _JUNK),
            "prev": st.one_of(st.none(), _JUNK),
            "sig": st.one_of(st.just(b"\x00" * 64), _JUNK),
        },
    )
)
def test_any_commit_map_decodes_or_raises_invalid_repo(commit: dict) -> None:
    block = cbrrr.encode_dag_cbor(commit)
    cid = cid_for_block(block)
    target_decode_repo(write_car([cid], [(cid, block), *_TREE_BLOCKS.items()]))


# --- record blocks -------------------------------------------------------------------------

_CBOR = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**64), 2**64 - 1),
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(max_size=8),
        st.binary(max_size=8),
        st.just(cbrrr.CID(VALUE)),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=20,
)


def _one_record(block: bytes) -> None:
    repo = target_decode_repo(repo_with_blocks({PATH: block}))
    assert repo is None or len(repo) == 1


@given(st.binary(max_size=200))
def test_random_record_block_is_a_row_or_invalid_repo(block: bytes) -> None:
    _one_record(block)


@given(_CBOR)
def test_any_dag_cbor_value_is_a_row_or_invalid_repo(value: object) -> None:
    _one_record(cbrrr.encode_dag_cbor(value))


@given(st.integers(0, 400), st.sampled_from([b"\x81", b"\xa1\x61a"]))
def test_deeply_nested_record_is_a_row_or_invalid_repo(depth: int, level: bytes) -> None:
    _one_record(b"\xa1\x61a" + level * depth + b"\x00")


@given(st.randoms(use_true_random=False))
def test_mutated_record_block_is_a_row_or_invalid_repo(rnd: random.Random) -> None:
    value = next(iter(sample_records(1, seed=rnd.randrange(100)).values()))
    _one_record(mutate_block(cbrrr.encode_dag_cbor(value), rnd))


# --- regressions: the minimal inputs of findings -------------------------------------------


def _refused(car: bytes) -> InvalidRepo:
    with pytest.raises(InvalidRepo) as refused:
        decode_repo(car, DID)
    return refused.value


@pytest.mark.parametrize(
    ("name", "block"),
    [
        ("255 levels deep (orjson writes 254)", b"\xa1\x61a" + b"\x81" * 254 + b"\x00"),
        ("integer -2**64", b"\xa1\x61a\x3b" + b"\xff" * 8),
        ("integer -2**63 - 1", b"\xa1\x61a\x3b\x80" + b"\x00" * 7),
        ("a string, not a map", b"\x64blah"),
        ("an array, not a map", b"\x80"),
    ],
)
def test_record_that_is_not_json_or_not_a_map_is_bad_record(name: str, block: bytes) -> None:
    # Was: TypeError from orjson.dumps escaping decode_repo (the first three), a row (others).
    assert _refused(repo_with_blocks({PATH: block})).kind is RepoFault.BAD_RECORD


def test_record_at_the_integer_and_depth_limits_is_a_row() -> None:
    block = b"\xa3\x61a" + b"\x81" * 253 + b"\x00" + b"\x61b\x3b\x7f" + b"\xff" * 7 + b"\x61c\x00"
    repo = decode_repo(repo_with_blocks({PATH: block}), DID)
    assert repo.records[0].endswith(',"b":-9223372036854775808,"c":0}')


@pytest.mark.parametrize("prefix", ["1", 1.5, -1, None, [1], True])
def test_mst_entry_prefix_that_is_not_a_small_int_is_malformed(prefix: object) -> None:
    # Was: TypeError ('>' between str and int; a float slice index) from the walk.
    first = {"p": 0, "k": keys_at_layer(0, 1)[0], "v": ("cid", VALUE), "t": None}
    second = {"p": prefix, "k": b"9", "v": ("cid", VALUE), "t": None}
    blocks, root = mst_blocks([{"l": None, "e": [first, second]}])
    with pytest.raises(InvalidRepo) as refused:
        mst.collect(getter(blocks), root)
    assert refused.value.kind is RepoFault.MST_MALFORMED


def test_chain_of_empty_mst_nodes_is_malformed_not_a_recursion_error() -> None:
    # Was: RecursionError (an empty node has no layer, so nothing bounded the depth).
    nodes: list[dict] = [{"l": None, "e": []}]
    nodes += [{"l": ("node", i), "e": []} for i in range(1200)]
    blocks, root = mst_blocks(nodes)
    with pytest.raises(InvalidRepo) as refused:
        mst.collect(getter(blocks), root)
    assert refused.value.kind is RepoFault.MST_MALFORMED
    assert _refused(repo_with_root(root, blocks)).kind is RepoFault.MST_MALFORMED


def test_mst_node_linked_many_times_is_refused_at_once() -> None:
    # Was: every path through the shared nodes walked before the order check: 30 entries
    # on each of 4 layers, each pointing to the one node below (10 KB), took 1.6 s and
    # grows as 30^layers (a 20 KB CAR would not finish).
    fanout, layers = 30, 6
    nodes = []
    for layer in range(layers):
        entries, previous = [], b""
        for key in keys_at_layer(layer, fanout):
            prefix = mst.common_prefix(previous, key)
            subtree = ("node", layer - 1) if layer else None
            entries.append({"p": prefix, "k": key[prefix:], "v": ("cid", VALUE), "t": subtree})
            previous = key
        nodes.append({"l": None, "e": entries})
    blocks, root = mst_blocks(nodes)
    started = time.perf_counter()
    assert _refused(repo_with_root(root, blocks)).kind is RepoFault.MST_KEY_ORDER
    assert time.perf_counter() - started < 5.0

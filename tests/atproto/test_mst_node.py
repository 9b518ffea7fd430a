"""Tests of the MST node codec (`mst_node`) and of the helpers it shares with `mst`.

Encoding must give exactly cbrrr's bytes for the node `mst.build` writes. Decoding has a fast
path (libipld, checked by encoding again) and the cbrrr one: for any block, valid or not, the
fast path must give what the cbrrr path gives, or leave the block to it. Encoding a node
again from the block it was read from (splicing changed subtree CIDs into it, reusing the
entries as read) must give the bytes a fresh encoding gives.
"""

from __future__ import annotations

import hashlib
import random

import cbrrr
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyfill.atproto import mst
from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.mst_node import (
    Decoded,
    _decode_checked,
    _new_entry,
    decode_node,
    encode_node,
)
from tests.atproto.fuzzing import (
    index_nodes,
    keys_at_layer,
    mst_blocks,
    mutate_block,
    mutate_nodes,
    random_nodes,
)


def value(i: int) -> bytes:
    return cid_for_block(f"record {i}".encode())


def reference_encoding(keys: list[bytes], values: list[bytes], subs: list[bytes | None]) -> bytes:
    """The node as `mst.build` encodes it: cbrrr over dicts, each prefix the longest."""
    entries = []
    previous = b""
    for key, cid, subtree in zip(keys, values, subs[1:], strict=True):
        prefix = mst.common_prefix(previous, key)
        entries.append(
            {
                "p": prefix,
                "k": key[prefix:],
                "v": cbrrr.CID(cid),
                "t": None if subtree is None else cbrrr.CID(subtree),
            }
        )
        previous = key
    left = None if subs[0] is None else cbrrr.CID(subs[0])
    return cbrrr.encode_dag_cbor({"l": left, "e": entries})


def outcome(decode: object, block: bytes) -> object:
    """What decoding gives, as comparable data: the node (without the fast path's entry
    bytes; CIDs as plain bytes) or the kind of InvalidRepo."""
    assert callable(decode)
    try:
        layer, keys, values, subs, _ = decode(block)
    except InvalidRepo as exc:
        return exc.kind
    return layer, keys, [bytes(v) for v in values], [None if s is None else bytes(s) for s in subs]


# --- mst helpers ----------------------------------------------------------------------------


@given(st.binary(max_size=40))
def test_key_layer_counts_leading_zero_bits_in_pairs(key: bytes) -> None:
    digest = int.from_bytes(hashlib.sha256(key).digest())
    assert mst.key_layer(key) == (256 - digest.bit_length()) // 2


@given(st.binary(max_size=12), st.binary(max_size=12))
def test_common_prefix(a: bytes, b: bytes) -> None:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    assert mst.common_prefix(a, b) == n
    assert mst.common_prefix(a, a + b) == len(a)


# --- encoding -------------------------------------------------------------------------------

_CIDS = st.one_of(
    st.integers(0, 50).map(value),
    st.binary(min_size=34, max_size=34).map(lambda d: b"\x12\x20" + d[2:]),  # a CIDv0's length
)
_KEYS = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=30),
        st.binary(min_size=250, max_size=300),  # a key suffix of 256 bytes or more
        st.integers(0, 10**6).map(lambda i: f"app.bsky.feed.post/{i:013d}".encode()),
    ),
    max_size=30,
    unique=True,
).map(sorted)


@st.composite
def _nodes(draw: st.DrawFn) -> tuple[list[bytes], list[bytes], list[bytes | None]]:
    keys = draw(_KEYS)
    values = [draw(_CIDS) for _ in keys]
    subs = [draw(st.one_of(st.none(), _CIDS)) for _ in range(len(keys) + 1)]
    return keys, values, subs


@given(_nodes())
def test_encoding_is_cbrrr_s(node: tuple[list[bytes], list[bytes], list[bytes | None]]) -> None:
    keys, values, subs = node
    block = encode_node(keys, values, subs)
    assert block == reference_encoding(keys, values, subs)
    assert outcome(decode_node, block) == outcome(_decode_checked, block)
    decoded = _decode_checked(block) if len({mst.key_layer(key) for key in keys}) == 1 else None
    assert decoded is None or decoded[1:4] == (keys, values, subs)


def test_many_entries_and_long_prefixes() -> None:
    """Over 255 entries and prefixes over 255 bytes: the cbrrr path, and cbrrr's bytes."""
    keys = keys_at_layer(0, 300, collection="com.example." + "x" * 300)
    values = [value(i) for i in range(300)]
    subs: list[bytes | None] = [None] * 301
    block = encode_node(keys, values, subs)
    assert block == reference_encoding(keys, values, subs)
    assert decode_node(block)[:4] == (0, keys, values, subs)
    assert decode_node(block)[4] is None


# --- decoding: the fast path gives what cbrrr's gives ------------------------------------


def _built_blocks() -> dict[bytes, bytes]:
    rnd = random.Random(3)
    blocks: dict[bytes, bytes] = {}
    for count in (0, 1, 40, 3000):
        items = {f"app.bsky.feed.post/3k{rnd.getrandbits(60):015x}".encode() for _ in range(count)}
        mst.build([(key, value(i)) for i, key in enumerate(sorted(items))], blocks)
    return blocks


_BUILT = _built_blocks()


def test_built_nodes_take_the_fast_path() -> None:
    for block in _BUILT.values():
        fast = decode_node(block)
        assert fast[4] is not None
        assert outcome(decode_node, block) == outcome(_decode_checked, block)
        assert b"".join(fast[4]) in block


_SAMPLE = sorted(_BUILT.values())[:200]


@given(st.sampled_from(_SAMPLE), st.randoms(use_true_random=False))
def test_mutated_blocks_decode_alike(block: bytes, rnd: random.Random) -> None:
    for _ in range(3):
        block = mutate_block(block, rnd)
        assert outcome(decode_node, block) == outcome(_decode_checked, block)


@given(st.randoms(use_true_random=False))
def test_random_nodes_decode_alike(rnd: random.Random) -> None:
    blocks, _ = mst_blocks(random_nodes(rnd))
    for block in blocks.values():
        assert outcome(decode_node, block) == outcome(_decode_checked, block)


_TREE_BLOCKS: dict[bytes, bytes] = {}
_TREE = index_nodes(
    _TREE_BLOCKS,
    mst.build([(f"com.example.a/{i:08d}".encode(), value(i)) for i in range(80)], _TREE_BLOCKS),
)


@given(st.randoms(use_true_random=False))
def test_mutated_trees_decode_alike(rnd: random.Random) -> None:
    blocks, _ = mst_blocks(mutate_nodes(_TREE, rnd))
    for block in blocks.values():
        assert outcome(decode_node, block) == outcome(_decode_checked, block)


def _entry(p: object, k: object, v: object, t: object = None) -> dict:
    return {"p": p, "k": k, "v": v, "t": t}


KEY_A, KEY_B = b"com.example.a/00000001", b"com.example.a/00000002"
LINK = cbrrr.CID(value(1))


@pytest.mark.parametrize(
    "node",
    [
        # a key as a CID and a value as a byte string: libipld gives both as bytes
        {"l": None, "e": [_entry(0, cbrrr.CID(KEY_A + bytes(14)), bytes(value(1)))]},
        {"l": None, "e": [_entry(0, KEY_A, bytes(value(1)))]},
        {"l": bytes(value(1)), "e": [_entry(0, KEY_A, LINK)]},
        {"l": None, "e": [_entry(0, KEY_A, LINK, bytes(value(2)))]},
        # a prefix shorter than the longest: accepted, but not canonical
        {"l": None, "e": [_entry(0, KEY_A, LINK), _entry(3, KEY_B[3:], LINK)]},
        # a prefix longer than the previous key, a negative or a boolean one
        {"l": None, "e": [_entry(0, KEY_A, LINK), _entry(40, b"x", LINK)]},
        {"l": None, "e": [_entry(-1, KEY_A, LINK)]},
        {"l": None, "e": [_entry(False, KEY_A, LINK)]},
        # extra or missing fields, CIDs of other lengths, text for bytes
        {"l": None, "e": [{**_entry(0, KEY_A, LINK), "x": 1}]},
        {"l": None, "e": [{"p": 0, "k": KEY_A, "v": LINK}]},
        {"l": None, "e": [_entry(0, KEY_A, LINK)], "x": 1},
        {"l": None, "e": [_entry(0, KEY_A, cbrrr.CID(b"\x12\x20" + bytes(32)))]},
        {"l": None, "e": [_entry(0, KEY_A.decode(), LINK)]},
        # keys out of order, twice, on two layers; a key of 300 bytes
        {"l": None, "e": [_entry(0, KEY_B, LINK), _entry(0, KEY_A, LINK)]},
        {"l": None, "e": [_entry(0, KEY_A, LINK), _entry(len(KEY_A), b"", LINK)]},
        {"l": None, "e": [_entry(0, b"a" * 300, LINK)]},
        {"l": None, "e": []},
        {"l": LINK, "e": []},
    ],
)
def test_crafted_nodes_decode_alike(node: dict) -> None:
    block = cbrrr.encode_dag_cbor(node)
    assert outcome(decode_node, block) == outcome(_decode_checked, block)


# --- encoding again from the block read -------------------------------------------------


@given(st.sampled_from(_SAMPLE), st.randoms(use_true_random=False))
def test_encoding_again_from_the_read_block(block: bytes, rnd: random.Random) -> None:
    """Change a node as edits do (subtrees, values, keys in and out), then encode it with
    and without what was read: the same bytes, a fresh encoding's."""
    read: Decoded = decode_node(block)
    _, keys, values, subs, _ = read
    keys, values, subs = keys.copy(), values.copy(), subs.copy()
    for _ in range(rnd.randrange(4)):
        what = rnd.randrange(5)
        if what == 0:
            subs[rnd.randrange(len(subs))] = rnd.choice([None, value(rnd.randrange(9)), *subs])
        elif what == 1 and keys:
            values[rnd.randrange(len(keys))] = rnd.choice([*values, value(-1)])
        elif what == 2 and keys:
            i = rnd.randrange(len(keys))
            del keys[i], values[i], subs[i + 1]
        elif what == 3:
            key = rnd.choice([*keys, b""]) + bytes([rnd.randrange(256)])
            if key not in keys:
                keys.append(key)
                keys.sort()
                i = keys.index(key)
                values.insert(i, value(i))
                subs.insert(i + 1, rnd.choice([None, value(-2)]))
        elif what == 4 and len(subs) > 1:  # two slots swap subtrees
            i, j = rnd.sample(range(len(subs)), 2)
            subs[i], subs[j] = subs[j], subs[i]
    fresh = encode_node(keys, values, subs)
    assert encode_node(keys, values, subs, (block, read)) == fresh
    assert fresh == reference_encoding(keys, values, subs)


def test_a_keyless_node_read_and_encoded_again() -> None:
    block = encode_node([], [], [value(1)])
    read = decode_node(block)
    assert read[4] == []
    assert encode_node([], [], [value(2)], (block, read)) == encode_node([], [], [value(2)])
    assert encode_node([KEY_A], [value(3)], [value(2), None], (block, read)) == (
        reference_encoding([KEY_A], [value(3)], [value(2), None])
    )


def test_a_subtree_cid_found_twice_is_not_spliced() -> None:
    """A value equal to a subtree's CID: replacing that CID in the block would change both."""
    twin = value(5)
    keys = [KEY_A, KEY_B]
    block = encode_node(keys, [twin, value(2)], [None, twin, None])
    raws = [_new_entry(b"", KEY_A, twin, twin), _new_entry(KEY_A, KEY_B, value(2), None)]
    read: Decoded = (0, keys, [twin, value(2)], [None, twin, None], raws)
    subs: list[bytes | None] = [None, value(6), None]
    spliced = encode_node(keys, [twin, value(2)], subs, (block, read))
    assert spliced == reference_encoding(keys, [twin, value(2)], subs)

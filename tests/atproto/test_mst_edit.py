"""Tests of the partial MST and of inverting a commit's ops (sync 1.1).

The reference is `mst.build` over the final key set: an edited tree must have the same root.
The interop vectors (`commit-proof-fixtures.json`, from the reference implementation) also
say which blocks a host sends as the proof; inverting with only those must work, and with
one of the needed ones missing must say `missing_proof`.
"""

from __future__ import annotations

import contextlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import cbrrr
import libipld
import pytest
from hypothesis import given
from hypothesis import strategies as st

from skyfill.atproto import mst
from skyfill.atproto.cid import cid_for_block, cid_from_str
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.mst_edit import PartialMST, diff_blocks, invert_ops, proof_blocks
from tests.atproto.fuzzing import (
    getter,
    index_nodes,
    keys_at_layer,
    mst_blocks,
    mutate_nodes,
    random_nodes,
)

FIXTURES = json.loads(
    (
        Path(__file__).parent.parent / "interop/vectors/firehose/commit-proof-fixtures.json"
    ).read_text()
)


@dataclass(frozen=True, slots=True)
class Op:
    """A `#commit` op, shaped as stream/frames.py's RepoOp."""

    action: str
    path: str
    cid: bytes | None
    prev: bytes | None


def value(i: int) -> bytes:
    return cid_for_block(f"record {i}".encode())


def build(items: dict[bytes, bytes], blocks: dict[bytes, bytes]) -> bytes:
    return mst.build(sorted(items.items()), blocks)


def counting(blocks: dict[bytes, bytes], reads: list[bytes]) -> Callable[[bytes], bytes]:
    get = getter(blocks)

    def read(cid: bytes) -> bytes:
        reads.append(cid)
        return get(cid)

    return read


# --- the interop vectors -------------------------------------------------------------------


def _fixture_trees(fixture: dict) -> tuple[dict[bytes, bytes], bytes, bytes, list[Op]]:
    leaf = cid_from_str(fixture["leafValue"])
    before = {key.encode(): leaf for key in fixture["keys"]}
    after = {key: leaf for key in before if key.decode() not in fixture["dels"]}
    after |= {key.encode(): leaf for key in fixture["adds"]}
    blocks: dict[bytes, bytes] = {}
    old, new = build(before, blocks), build(after, blocks)
    ops = [Op("create", key, leaf, None) for key in fixture["adds"]]
    ops += [Op("delete", key, None, leaf) for key in fixture["dels"]]
    return blocks, old, new, ops


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["comment"] for f in FIXTURES])
def test_fixture_roots_and_edits(fixture: dict) -> None:
    blocks, old, new = _fixture_trees(fixture)[:3]
    assert old == cid_from_str(fixture["rootBeforeCommit"])
    assert new == cid_from_str(fixture["rootAfterCommit"])
    leaf = cid_from_str(fixture["leafValue"])
    tree = PartialMST(old, getter(blocks))
    for key in fixture["adds"]:
        assert tree.put(key.encode(), leaf) is None
    for key in fixture["dels"]:
        assert tree.delete(key.encode()) == leaf
    assert tree.root() == new
    assert tree.blocks[new] == blocks[new]


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["comment"] for f in FIXTURES])
def test_fixture_inverts_with_only_the_proof(fixture: dict) -> None:
    blocks, old, new, ops = _fixture_trees(fixture)
    proof = {cid_from_str(cid) for cid in fixture["blocksInProof"]}
    assert invert_ops(new, getter({cid: blocks[cid] for cid in proof}), ops) == old
    needed = proof_blocks(new, getter(blocks), ops)
    assert needed <= proof
    assert new in needed


@pytest.mark.parametrize("fixture", FIXTURES, ids=[f["comment"] for f in FIXTURES])
def test_fixture_without_one_proof_block(fixture: dict) -> None:
    blocks, old, new, ops = _fixture_trees(fixture)
    proof = {cid_from_str(cid) for cid in fixture["blocksInProof"]}
    needed = proof_blocks(new, getter(blocks), ops)
    for dropped in proof:
        slice_ = {cid: blocks[cid] for cid in proof - {dropped}}
        if dropped in needed:
            with pytest.raises(InvalidRepo) as caught:
                invert_ops(new, getter(slice_), ops)
            assert caught.value.kind is RepoFault.MISSING_PROOF
        else:
            assert invert_ops(new, getter(slice_), ops) == old


# --- editing -------------------------------------------------------------------------------


def test_empty_tree_is_the_built_empty_tree() -> None:
    blocks: dict[bytes, bytes] = {}
    empty = build({}, blocks)
    assert PartialMST(empty, getter(blocks)).root() == empty
    key = b"app.bsky.feed.post/3kaaaaaaaaaa2"
    tree = PartialMST(empty, getter(blocks))
    assert tree.get(key) is None
    assert tree.delete(key) is None
    tree.put(key, value(1))
    assert tree.root() == build({key: value(1)}, {})
    assert tree.delete(key) == value(1)
    assert tree.root() == empty


def test_keys_on_high_layers_raise_and_lower_the_root() -> None:
    low = {key: value(i) for i, key in enumerate(keys_at_layer(0, 20))}
    high = keys_at_layer(2, 2)
    blocks: dict[bytes, bytes] = {}
    tree = PartialMST(build(low, blocks), getter(blocks))
    for i, key in enumerate(high):
        tree.put(key, value(100 + i))
    assert tree.root() == build(low | {k: value(100 + i) for i, k in enumerate(high)}, {})
    for key in high:
        tree.delete(key)
    assert tree.root() == build(low, {})


def test_put_replaces_and_an_unchanged_value_changes_nothing() -> None:
    items = {key: value(i) for i, key in enumerate(keys_at_layer(0, 30) + keys_at_layer(1, 5))}
    blocks: dict[bytes, bytes] = {}
    root = build(items, blocks)
    key = keys_at_layer(1, 5)[2]
    tree = PartialMST(root, getter(blocks))
    assert tree.put(key, items[key]) == items[key]
    assert tree.root() == root
    assert tree.blocks == {}
    assert tree.put(key, value(999)) == items[key]
    assert tree.get(key) == value(999)
    assert tree.root() == build(items | {key: value(999)}, {})


def test_untouched_subtrees_are_not_loaded() -> None:
    items = {f"app.bsky.feed.post/{i:013d}".encode(): value(i) for i in range(5000)}
    blocks: dict[bytes, bytes] = {}
    root = build(items, blocks)
    reads: list[bytes] = []
    tree = PartialMST(root, counting(blocks, reads))
    new_key = b"app.bsky.feed.post/0000000002500x"
    tree.put(new_key, value(-1))
    assert tree.root() == build(items | {new_key: value(-1)}, {})
    assert len(reads) <= 12, len(reads)
    assert len(set(reads)) == len(reads)


def test_nodes_edited_several_times_keep_every_edit() -> None:
    """Edits that go through the same nodes (neighbouring keys) before one `root()`: each
    shows in the encoding, whether a node is encoded again from its block (subtree CIDs
    replaced), from its entries as read, or afresh; undone edits give the old root back."""
    items = {f"app.bsky.feed.post/{i:05d}".encode(): value(i) for i in range(2000)}
    blocks: dict[bytes, bytes] = {}
    root = build(items, blocks)
    keys = sorted(items)
    rnd = random.Random(7)
    for trial in range(40):
        tree = PartialMST(root, getter(blocks))
        expected = dict(items)
        start = rnd.randrange(len(keys) - 30)
        for key in rnd.sample(keys[start : start + 30], 8):
            action = rnd.randrange(4)
            if action == 0:
                tree.put(key, value(-trial))
                expected[key] = value(-trial)
            elif action == 1:
                tree.delete(key)
                del expected[key]
            elif action == 2:
                tree.put(key + b"x", value(5))
                expected[key + b"x"] = value(5)
            else:  # changed, then changed back
                tree.put(key, value(-1))
                tree.put(key, items[key])
        assert tree.root() == build(expected, {})
    tree = PartialMST(root, getter(blocks))
    tree.delete(keys[10])
    tree.put(keys[10], items[keys[10]])
    tree.put(keys[11] + b"x", value(1))
    tree.delete(keys[11] + b"x")
    assert tree.root() == root


# --- inverting -----------------------------------------------------------------------------

PATH = "app.bsky.feed.post/3kaaaaaaaaaa2"


def _small_repo() -> tuple[dict[bytes, bytes], dict[bytes, bytes], bytes]:
    items = {f"app.bsky.feed.like/{i:04d}".encode(): value(i) for i in range(40)}
    items[PATH.encode()] = value(7)
    blocks: dict[bytes, bytes] = {}
    return items, blocks, build(items, blocks)


@pytest.mark.parametrize(
    "op",
    [
        Op("create", PATH, value(8), None),
        Op("create", "app.bsky.feed.post/absent", value(8), None),
        Op("update", PATH, value(8), value(6)),
        Op("update", PATH, value(7), None),
        Op("delete", PATH, None, value(7)),
        Op("delete", "app.bsky.feed.post/absent", None, None),
        Op("delete", "app.bsky.feed.post/absent", None, b"not a cid"),
        Op("rename", PATH, value(7), None),
        Op("create", 42, value(7), None),  # type: ignore[arg-type]
        Op("create", "\udc80", value(7), None),
    ],
)
def test_ops_that_do_not_match_the_tree_are_bad_ops(op: Op) -> None:
    _, blocks, root = _small_repo()
    with pytest.raises(InvalidRepo) as caught:
        invert_ops(root, getter(blocks), [op])
    assert caught.value.kind is RepoFault.BAD_OPS


def test_a_path_twice_is_bad_ops() -> None:
    _, blocks, root = _small_repo()
    ops = [Op("update", PATH, value(7), value(1)), Op("update", PATH, value(7), value(2))]
    with pytest.raises(InvalidRepo) as caught:
        invert_ops(root, getter(blocks), ops)
    assert caught.value.kind is RepoFault.BAD_OPS


def test_no_ops_give_the_same_root_and_read_nothing() -> None:
    reads: list[bytes] = []
    _, blocks, root = _small_repo()
    assert invert_ops(root, counting(blocks, reads), []) == root
    assert reads == []


def test_missing_root_is_missing_proof() -> None:
    _, _, root = _small_repo()
    with pytest.raises(InvalidRepo) as caught:
        invert_ops(root, getter({}), [Op("create", PATH, value(7), None)])
    assert caught.value.kind is RepoFault.MISSING_PROOF


def test_a_block_that_does_not_match_its_cid() -> None:
    _, _, root = _small_repo()
    forged = {root: cbrrr.encode_dag_cbor({"l": None, "e": []})}
    with pytest.raises(InvalidRepo) as caught:
        invert_ops(root, forged.__getitem__, [Op("create", PATH, value(7), None)])
    assert caught.value.kind is RepoFault.CID_MISMATCH


def test_a_keyless_root_with_a_subtree_is_malformed() -> None:
    _, blocks, root = _small_repo()
    wrapper = cbrrr.encode_dag_cbor({"l": cbrrr.CID(root), "e": []})
    blocks[cid_for_block(wrapper)] = wrapper
    with pytest.raises(InvalidRepo) as caught:
        invert_ops(cid_for_block(wrapper), getter(blocks), [Op("create", PATH, value(7), None)])
    assert caught.value.kind is RepoFault.MST_MALFORMED


def test_a_node_at_the_wrong_layer_is_refused() -> None:
    child_key, root_key = keys_at_layer(1, 2)
    below = next(key for key in keys_at_layer(0, 50) if key < root_key)
    blocks, root = mst_blocks(
        [
            {"l": None, "e": [{"p": 0, "k": child_key, "v": ("cid", value(0)), "t": None}]},
            {"l": ("node", 0), "e": [{"p": 0, "k": root_key, "v": ("cid", value(1)), "t": None}]},
        ]
    )
    with pytest.raises(InvalidRepo) as caught:
        PartialMST(root, getter(blocks)).get(below)
    assert caught.value.kind is RepoFault.MST_KEY_LAYER


def test_a_leaf_with_a_subtree_is_malformed() -> None:
    key = keys_at_layer(0, 1)[0]
    blocks, root = mst_blocks(
        [
            {"l": None, "e": []},
            {"l": ("node", 0), "e": [{"p": 0, "k": key, "v": ("cid", value(1)), "t": None}]},
        ]
    )
    with pytest.raises(InvalidRepo) as caught:
        PartialMST(root, getter(blocks)).get(key)
    assert caught.value.kind is RepoFault.MST_MALFORMED


def test_a_long_chain_of_keyless_nodes_is_refused_without_recursing() -> None:
    nodes: list[dict] = [{"l": None, "e": []}]
    nodes += [{"l": ("node", i), "e": []} for i in range(3000)]
    key = keys_at_layer(2, 1)[0]
    nodes.append(
        {"l": ("node", 3000), "e": [{"p": 0, "k": key, "v": ("cid", value(1)), "t": None}]}
    )
    blocks, root = mst_blocks(nodes)
    tree = PartialMST(root, getter(blocks))
    with pytest.raises(InvalidRepo) as caught:
        tree.put(b"app.bsky.feed.post/other", value(2))
    assert caught.value.kind is RepoFault.MST_MALFORMED


# --- properties ----------------------------------------------------------------------------

_COLLECTIONS = ["app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"]
_RKEY = st.text("abcdefghijklmnopqrstuvwxyz234567", min_size=1, max_size=13)
_PATHS = st.builds(lambda c, r: f"{c}/{r}", st.sampled_from(_COLLECTIONS), _RKEY)


@st.composite
def _commits(draw: st.DrawFn) -> tuple[dict[str, bytes], list[Op]]:
    """A repo (path -> value) and a commit's ops on it: creates, updates and deletes."""
    paths = draw(st.lists(_PATHS, min_size=0, max_size=120, unique=True))
    before = {path: value(i) for i, path in enumerate(paths)}
    created = draw(st.lists(_PATHS.filter(lambda p: p not in before), max_size=12, unique=True))
    touched = draw(st.lists(st.sampled_from(paths), max_size=12, unique=True)) if paths else []
    ops = [Op("create", path, value(10_000 + i), None) for i, path in enumerate(created)]
    for i, path in enumerate(touched):
        if draw(st.booleans()):
            ops.append(Op("update", path, value(20_000 + i), before[path]))
        else:
            ops.append(Op("delete", path, None, before[path]))
    return before, draw(st.permutations(ops))


def _apply(before: dict[str, bytes], ops: Sequence[Op]) -> dict[str, bytes]:
    after = dict(before)
    for op in ops:
        if op.action == "delete":
            del after[op.path]
        else:
            assert op.cid is not None
            after[op.path] = op.cid
    return after


def _encoded(items: dict[str, bytes]) -> dict[bytes, bytes]:
    return {path.encode(): cid for path, cid in items.items()}


def _path_to(blocks: dict[bytes, bytes], root: bytes, key: bytes) -> list[bytes]:
    """The node CIDs from the root down to `key`, or to where it would be (a plain walk,
    written apart from mst_edit's)."""
    path: list[bytes] = []
    cid: bytes | None = root
    while cid is not None:
        path.append(cid)
        node = libipld.decode_dag_cbor(blocks[cid])
        previous = b""
        child = node["l"]
        for entry in node["e"]:
            previous = previous[: entry["p"]] + entry["k"]
            if previous == key:
                return path
            if previous > key:
                break
            child = entry["t"]
        cid = child
    return path


def _covering_proof(
    blocks: dict[bytes, bytes], root: bytes, after: dict[str, bytes], ops: Sequence[Op]
) -> set[bytes]:
    """Spec's covering proof: paths to each op's key in the new tree and, for a create,
    to the keys beside it."""
    keys = sorted(path.encode() for path in after)
    proof: set[bytes] = set()
    for op in ops:
        key = op.path.encode()
        proof.update(_path_to(blocks, root, key))
        if op.action == "create":
            i = keys.index(key)
            for neighbour in keys[max(i - 1, 0) : i + 2]:
                proof.update(_path_to(blocks, root, neighbour))
    return proof


@given(_commits())
def test_edits_equal_a_tree_built_from_scratch(commit: tuple[dict[str, bytes], list[Op]]) -> None:
    before, ops = commit
    after = _apply(before, ops)
    blocks: dict[bytes, bytes] = {}
    old, new = build(_encoded(before), blocks), build(_encoded(after), blocks)
    tree = PartialMST(old, getter(blocks))
    for op in ops:
        if op.action == "delete":
            assert tree.delete(op.path.encode()) == before[op.path]
        else:
            assert op.cid is not None
            assert tree.put(op.path.encode(), op.cid) == before.get(op.path)
    assert tree.root() == new
    assert all(blocks[cid] == block for cid, block in tree.blocks.items())


@given(_commits())
def test_inverting_gives_the_old_root_from_a_minimal_slice(
    commit: tuple[dict[str, bytes], list[Op]],
) -> None:
    before, ops = commit
    after = _apply(before, ops)
    blocks: dict[bytes, bytes] = {}
    old, new = build(_encoded(before), blocks), build(_encoded(after), blocks)
    assert invert_ops(new, getter(blocks), ops) == old
    covering = _covering_proof(blocks, new, after, ops)
    assert invert_ops(new, getter({cid: blocks[cid] for cid in covering}), ops) == old
    needed = proof_blocks(new, getter(blocks), ops)
    assert needed <= covering
    host_slice = diff_blocks(old, new, getter(blocks)) | needed
    assert invert_ops(new, getter({cid: blocks[cid] for cid in host_slice}), ops) == old
    for dropped in needed:
        with pytest.raises(InvalidRepo) as caught:
            invert_ops(new, getter({c: blocks[c] for c in host_slice - {dropped}}), ops)
        assert caught.value.kind is RepoFault.MISSING_PROOF


def test_diff_blocks_are_the_new_nodes() -> None:
    items = {f"app.bsky.feed.post/{i:05d}".encode(): value(i) for i in range(300)}
    blocks: dict[bytes, bytes] = {}
    old = build(items, blocks)
    new = build(items | {b"app.bsky.feed.post/00150x": value(-1)}, blocks)
    old_nodes = {cid for cid in blocks if cid != new}
    diff = diff_blocks(old, new, getter(blocks))
    assert new in diff
    assert not diff & diff_blocks(None, old, getter(blocks)) - {new}
    assert 1 <= len(diff) <= 6
    assert diff_blocks(None, old, getter(blocks)) <= old_nodes | {old}


@pytest.mark.parametrize("seed", range(4))
def test_large_random_commits_invert(seed: int) -> None:
    rnd = random.Random(seed)
    before = {
        f"{rnd.choice(_COLLECTIONS)}/{rnd.getrandbits(60):015x}": value(i) for i in range(3000)
    }
    paths = sorted(before)
    ops = [
        Op("create", f"app.bsky.feed.post/{rnd.getrandbits(60):015x}z", value(-i), None)
        for i in range(40)
    ]
    ops += [
        Op("update", p, value(-100 - i), before[p]) for i, p in enumerate(rnd.sample(paths, 40))
    ]
    ops += [
        Op("delete", p, None, before[p])
        for p in rnd.sample(sorted(set(paths) - {o.path for o in ops}), 40)
    ]
    rnd.shuffle(ops)
    after = _apply(before, ops)
    blocks: dict[bytes, bytes] = {}
    old, new = build(_encoded(before), blocks), build(_encoded(after), blocks)
    covering = _covering_proof(blocks, new, after, ops)
    assert invert_ops(new, getter({cid: blocks[cid] for cid in covering}), ops) == old


# --- fuzzing: any input is a root or InvalidRepo -------------------------------------------

_ACTIONS = st.sampled_from(["create", "update", "delete", "other"])
_CIDS = st.one_of(st.none(), st.sampled_from([value(i) for i in range(4)]), st.binary(max_size=40))


_FUZZ_PATHS = [f"app.bsky.feed.post/{i:04d}" for i in range(60)]
_FUZZ_ITEMS = {path.encode(): value(i % 4) for i, path in enumerate(_FUZZ_PATHS)}
_FUZZ_BLOCKS: dict[bytes, bytes] = {}
_FUZZ_TREE = index_nodes(_FUZZ_BLOCKS, build(_FUZZ_ITEMS, _FUZZ_BLOCKS))
_FUZZ_OPS = st.lists(
    st.builds(
        Op,
        _ACTIONS,
        st.one_of(st.sampled_from(_FUZZ_PATHS), _PATHS, st.text(max_size=8)),
        _CIDS,
        _CIDS,
    ),
    max_size=6,
)


def _run(root: bytes, blocks: dict[bytes, bytes], ops: list[Op]) -> None:
    """invert_ops returns a CID or raises InvalidRepo; a plain dict getter (KeyError) too."""
    for get in (getter(blocks), blocks.__getitem__):
        with contextlib.suppress(InvalidRepo):
            assert isinstance(invert_ops(root, get, ops), bytes)


@given(_FUZZ_OPS, st.integers(0, 2**32))
def test_random_ops_on_damaged_trees_raise_only_invalid_repo(ops: list[Op], seed: int) -> None:
    rnd = random.Random(seed)
    blocks, root = mst_blocks(mutate_nodes(_FUZZ_TREE, rnd))
    for cid in rnd.sample(sorted(blocks), rnd.randrange(3)):
        del blocks[cid]
    _run(root, blocks, ops)


@given(_FUZZ_OPS, st.integers(0, 2**32))
def test_random_ops_on_random_nodes_raise_only_invalid_repo(ops: list[Op], seed: int) -> None:
    blocks, root = mst_blocks(random_nodes(random.Random(seed)))
    _run(root, blocks, ops)


@given(_FUZZ_OPS)
def test_random_ops_on_a_valid_tree_raise_only_invalid_repo(ops: list[Op]) -> None:
    _run(build(_FUZZ_ITEMS, dict(_FUZZ_BLOCKS)), _FUZZ_BLOCKS, ops)

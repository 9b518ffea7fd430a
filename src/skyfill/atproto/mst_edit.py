"""Editing a partial MST, and the MST check of sync 1.1: inverting a commit's ops.

A `#commit` event carries only a slice of the repository: the new commit, the changed
records, and the MST nodes the consumer needs. `invert_ops` starts from the commit's new MST
root, checks each op against it (a create or update's key holds `op.cid`, a delete's key is
absent), undoes the ops in reverse order, and returns the resulting root CID: it must equal
the event's `prevData`, the root before the commit.

`PartialMST` loads nodes lazily through a block getter, so a subtree that is never touched
stays a CID and never needs to be in the slice. A node is read once: checked against its
CID, decoded and checked (`mst_node.decode_node`), and kept in place of the CID it replaces,
however many ops pass through it. An edit only marks the nodes it changes (their CID is
dropped); `root()` encodes each changed node once, bottom up, after all the edits. Changed
nodes are re-encoded exactly as `mst.build` encodes them (`mst_node.encode_node`), so an
edited tree's root is byte-identical to a tree built from scratch over the same keys (the
MST is canonical: a key sits at layer `key_layer(key)`, keys are prefix-compressed within a
node, an empty subtree is null, an empty top is trimmed).

Which nodes does the inversion read? For every op key, the path from the root down to the
key (or to where it would be: a proof of its absence). For a create, whose undoing removes
the key and merges the subtrees on either side of it, also the right edge of the subtree
left of the key and the left edge of the one right of it: the paths to the key's neighbours
in the new tree. This is the "covering proof" a host adds to the slice; `proof_blocks`
computes exactly the set this module reads, and `diff_blocks` the nodes of the new tree that
were not in the old one, so that a simulated host can send `diff ∪ proof` as a minimal slice.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from skyfill.atproto.cid import block_matches_cid, cid_for_block
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.mst import key_layer
from skyfill.atproto.mst_node import Decoded, decode_node, encode_node

BlockGetter = Callable[[bytes], bytes]
MALFORMED = RepoFault.MST_MALFORMED


class RepoOpLike(Protocol):
    """A `#commit` op as `stream/frames.py` decodes it (CIDs as raw bytes)."""

    @property
    def action(self) -> str: ...
    @property
    def path(self) -> str: ...
    @property
    def cid(self) -> bytes | None: ...
    @property
    def prev(self) -> bytes | None: ...


@dataclass(slots=True)
class _Node:
    layer: int
    keys: list[bytes]
    values: list[bytes]
    subs: list[_Child]
    """len(keys) + 1 subtrees: subs[i] holds the keys between keys[i - 1] and keys[i]."""
    cid: bytes | None
    """The node's CID while it is as loaded; None once changed (then re-encoded)."""
    read: tuple[bytes, Decoded] | None = None
    """The block of a loaded node and what it held, kept apart from the edited lists."""


# A subtree: absent, not loaded yet (its CID), or loaded.
_Child = bytes | _Node | None


class PartialMST:
    """An MST of which only the nodes read so far are in memory.

    Every read goes through `get_block`; a block it lacks (it raises InvalidRepo or
    KeyError) is `missing_proof`, a block that does not hash to its CID `cid_mismatch`, a
    node that is not a canonical MST node `mst_malformed` / `mst_key_layer` / `mst_key_order`.
    Nodes created by edits are kept in `blocks` by `root()`.
    """

    def __init__(self, root: bytes, get_block: BlockGetter, *, checked: bool = False) -> None:
        """`checked`: every block `get_block` gives is known to match its CID (a slice
        the caller has checked whole), so it is not hashed again."""
        self._get_block = get_block
        self._checked = checked
        self._root: _Child = root
        self._root_loaded = False
        self.blocks: dict[bytes, bytes] = {}

    # --- public operations ------------------------------------------------------------

    def get(self, key: bytes) -> bytes | None:
        """The value CID stored under `key`, or None when the tree does not hold it."""
        node = self._root_node()
        layer = key_layer(key)
        lo: bytes | None = None
        hi: bytes | None = None
        while node is not None and node.layer >= layer:
            keys = node.keys
            i = bisect_left(keys, key)
            if node.layer == layer:
                if i < len(keys) and keys[i] == key:
                    return bytes(node.values[i])
                return None
            if i:
                lo = keys[i - 1]
            if i < len(keys):
                hi = keys[i]
            node = self._slot(node, i, lo, hi)
        return None

    def put(self, key: bytes, value: bytes) -> bytes | None:
        """Store `value` under `key` (insert or replace); return the value it replaced."""
        layer = key_layer(key)
        cid = _value_cid(value)
        root = self._root_node()
        if root is None:
            root = _empty(layer)
        while root.layer < layer:
            root = _Node(root.layer + 1, [], [], [root], None)
        self._root = root
        return self._put(root, key, cid, layer, None, None)

    def delete(self, key: bytes) -> bytes | None:
        """Remove `key`; return the value it held, or None (and change nothing) if absent."""
        root = self._root_node()
        if root is None:
            return None
        removed = self._delete(root, key, key_layer(key), None, None)
        if removed is not None:
            self._root = self._trim_top(root)
        return removed

    def root(self) -> bytes:
        """The root CID of the tree as edited; new nodes are added to `blocks`."""
        if isinstance(self._root, bytes):
            return self._root
        if self._root is None:
            return self._store(encode_node([], [], [None]))
        return bytes(self._encode(self._root))

    # --- loading ----------------------------------------------------------------------

    def _root_node(self) -> _Node | None:
        if not self._root_loaded:
            self._root_loaded = True
            if isinstance(self._root, bytes):
                self._root = self._load_root(self._root)
        assert not isinstance(self._root, bytes)
        return self._root

    def _load_root(self, cid: bytes) -> _Node | None:
        block, read = self._read(cid)
        layer, _, _, subs, _ = read
        if layer is None:
            if subs[0] is not None:
                raise InvalidRepo("MST root has no keys but a subtree", MALFORMED)
            return None
        return _loaded(layer, cid, block, read)

    def _load(self, child: _Child, layer: int, lo: bytes | None, hi: bytes | None) -> _Node | None:
        """The node of a subtree one layer below its parent, loaded if it was a CID."""
        if not isinstance(child, bytes):
            return child
        if layer < 0:  # below a leaf node: refused when that node was loaded
            raise InvalidRepo("MST leaf-layer node has a subtree", MALFORMED)
        block, read = self._read(child)
        found, keys, _, subs, _ = read
        if found is None:
            if subs[0] is None:
                raise InvalidRepo("MST subtree is an empty node", MALFORMED)
        elif found != layer:
            raise InvalidRepo(
                f"MST node at layer {found} where layer {layer} belongs", RepoFault.MST_KEY_LAYER
            )
        if keys and ((lo is not None and keys[0] <= lo) or (hi is not None and keys[-1] >= hi)):
            raise InvalidRepo(
                "MST node holds keys outside its parent's range", RepoFault.MST_KEY_ORDER
            )
        return _loaded(layer, child, block, read)

    def _slot(self, node: _Node, i: int, lo: bytes | None, hi: bytes | None) -> _Node | None:
        """Load the subtree in gap `i` of `node` (bounded by lo, hi) and keep it there."""
        child = node.subs[i]
        if not isinstance(child, bytes):  # none, or loaded already
            return child
        loaded = node.subs[i] = self._load(child, node.layer - 1, lo, hi)
        return loaded

    def _read(self, cid: bytes) -> tuple[bytes, Decoded]:
        """Fetch a node, check it against its CID and decode it: the block, what it holds."""
        try:
            block = self._get_block(cid)
        except (InvalidRepo, KeyError, LookupError):
            raise InvalidRepo(
                f"MST node {cid.hex()[:16]}… needed for the inversion is not in the slice",
                RepoFault.MISSING_PROOF,
            ) from None
        if not isinstance(block, bytes) or not (self._checked or block_matches_cid(cid, block)):
            raise InvalidRepo("MST node does not match its CID", RepoFault.CID_MISMATCH)
        return block, decode_node(block)

    # --- editing ----------------------------------------------------------------------

    def _put(
        self, node: _Node, key: bytes, value: bytes, layer: int, lo: bytes | None, hi: bytes | None
    ) -> bytes | None:
        keys = node.keys
        i = bisect_left(keys, key)
        if node.layer == layer:
            if i < len(keys) and keys[i] == key:
                old = node.values[i]
                if old != value:
                    node.values[i] = value
                    node.cid = None
                return bytes(old)
            glo, ghi = _gap_bounds(node, i, lo, hi)
            below, above = self._split(self._slot(node, i, glo, ghi), key, glo, ghi)
            node.subs[i] = below
            keys.insert(i, key)
            node.values.insert(i, value)
            node.subs.insert(i + 1, above)
            node.cid = None
            return None
        clo, chi = _gap_bounds(node, i, lo, hi)
        child = self._slot(node, i, clo, chi)
        if child is None:
            child = node.subs[i] = _empty(node.layer - 1)
        old = self._put(child, key, value, layer, clo, chi)
        if child.cid is None:
            node.cid = None
        return old

    def _split(
        self, node: _Node | None, key: bytes, lo: bytes | None, hi: bytes | None
    ) -> tuple[_Node | None, _Node | None]:
        """Cut a subtree into the keys below `key` and those above it (both canonical)."""
        if node is None:
            return None, None
        keys, values, subs = node.keys, node.values, node.subs
        i = bisect_left(keys, key)
        glo, ghi = _gap_bounds(node, i, lo, hi)
        below, above = self._split(self._slot(node, i, glo, ghi), key, glo, ghi)
        low = _Node(node.layer, keys[:i], values[:i], [*subs[:i], below], None)
        high = _Node(node.layer, keys[i:], values[i:], [above, *subs[i + 1 :]], None)
        return _nonempty(low), _nonempty(high)

    def _delete(
        self, node: _Node, key: bytes, layer: int, lo: bytes | None, hi: bytes | None
    ) -> bytes | None:
        keys = node.keys
        i = bisect_left(keys, key)
        if node.layer == layer:
            if i == len(keys) or keys[i] != key:
                return None
            del keys[i]
            removed = node.values.pop(i)
            high = node.subs.pop(i + 1)
            bounds = _gap_bounds(node, i, lo, hi)
            node.subs[i] = self._merge(node.subs[i], high, node.layer - 1, bounds, key)
            node.cid = None
            return bytes(removed)
        if node.layer < layer:
            return None
        clo, chi = _gap_bounds(node, i, lo, hi)
        child = self._slot(node, i, clo, chi)
        if child is None:
            return None
        removed_value = self._delete(child, key, layer, clo, chi)
        if removed_value is not None:
            node.cid = None
            node.subs[i] = _nonempty(child)
        return removed_value

    def _merge(
        self,
        low: _Child,
        high: _Child,
        layer: int,
        bounds: tuple[bytes | None, bytes | None],
        middle: bytes,
    ) -> _Child:
        """Join two adjacent subtrees at `layer`, `low` holding keys in (bounds[0], middle)
        and `high` in (middle, bounds[1]). Only their facing edges are loaded."""
        if low is None:
            return high
        if high is None:
            return low
        a = self._load(low, layer, bounds[0], middle)
        b = self._load(high, layer, middle, bounds[1])
        assert a is not None and b is not None
        a_last = a.keys[-1] if a.keys else bounds[0]
        b_first = b.keys[0] if b.keys else bounds[1]
        inner = self._merge(a.subs[-1], b.subs[0], layer - 1, (a_last, b_first), middle)
        return _Node(
            layer, a.keys + b.keys, a.values + b.values, [*a.subs[:-1], inner, *b.subs[1:]], None
        )

    def _trim_top(self, root: _Node) -> _Node | None:
        """Drop keyless nodes from the top (the canonical root holds the highest keys)."""
        node: _Node | None = root
        while node is not None and not node.keys:
            if node.subs[0] is None:
                return None
            node = self._load(node.subs[0], node.layer - 1, None, None)
        return node

    # --- encoding ---------------------------------------------------------------------

    def _encode(self, node: _Node) -> bytes:
        """The node's CID; a changed node (and changed ones below it) encoded and stored."""
        if node.cid is not None:
            return node.cid
        subs = [
            child if child is None or isinstance(child, bytes) else self._encode(child)
            for child in node.subs
        ]
        node.cid = self._store(encode_node(node.keys, node.values, subs, node.read))
        return node.cid

    def _store(self, block: bytes) -> bytes:
        cid = cid_for_block(block)
        self.blocks[cid] = block
        return cid


def _empty(layer: int) -> _Node:
    return _Node(layer, [], [], [None], None)


def _gap_bounds(
    node: _Node, i: int, lo: bytes | None, hi: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """The key range of gap `i` of a node whose own range is (lo, hi)."""
    keys = node.keys
    return (keys[i - 1] if i else lo, keys[i] if i < len(keys) else hi)


def _loaded(layer: int, cid: bytes, block: bytes, read: Decoded) -> _Node:
    """The node of a block read at `cid`, refused if it is on the leaf layer and has a subtree;
    its lists are copies, the read ones stay as read (`encode_node` compares them)."""
    _, keys, values, subs, _ = read
    if layer == 0 and subs.count(None) != len(subs):
        raise InvalidRepo("MST leaf-layer node has a subtree", MALFORMED)
    return _Node(
        layer, keys.copy(), values.copy(), cast(list[_Child], subs.copy()), cid, (block, read)
    )


def _nonempty(node: _Node | None) -> _Node | None:
    if node is None or (not node.keys and node.subs[0] is None):
        return None
    return node


def _value_cid(value: bytes) -> bytes:
    """A record CID as the tree stores it; atproto's are CIDv1 with a sha-256 digest."""
    if (
        not isinstance(value, bytes)
        or len(value) != 36
        or value[0] != 1
        or value[2:4] != b"\x12\x20"
    ):
        raise InvalidRepo("a record CID is not a sha-256 CIDv1", RepoFault.BAD_OPS)
    return value


# --- sync 1.1 ---------------------------------------------------------------------------


def invert_ops(
    root: bytes, get_block: BlockGetter, ops: Sequence[RepoOpLike], *, checked: bool = False
) -> bytes:
    """The MST root before a commit: undo its `ops` on the tree at `root` (the commit's
    `data`) and return the root CID reached, to compare with the event's `prevData`.

    Raises InvalidRepo: `bad_ops` when an op does not match the new tree (a create or update
    whose key does not hold its cid, a delete whose key is present, an update or delete
    without `prev`, a path twice, an unknown action), `missing_proof` when a node the
    inversion needs is not in the slice, or the kind of a malformed node. `checked`: the
    getter's blocks are known to match their CIDs (see PartialMST).
    """
    tree = PartialMST(root, get_block, checked=checked)
    keys = [_check_op(tree, op) for op in _unique_paths(ops)]
    for op, key in zip(reversed(ops), reversed(keys), strict=True):
        if op.action == "create":
            tree.delete(key)
        else:
            assert op.prev is not None
            tree.put(key, op.prev)
    return tree.root()


def _unique_paths(ops: Sequence[RepoOpLike]) -> Sequence[RepoOpLike]:
    paths = [op.path for op in ops]
    if len(set(paths)) != len(paths):
        raise InvalidRepo("a commit touches a path twice", RepoFault.BAD_OPS)
    return ops


def _check_op(tree: PartialMST, op: RepoOpLike) -> bytes:
    """Check one op against the new tree; return its key."""
    path, action = op.path, op.action
    if not isinstance(path, str):
        raise InvalidRepo("an op's path is not a string", RepoFault.BAD_OPS)
    try:
        key = path.encode()
    except UnicodeEncodeError:
        raise InvalidRepo("an op's path is not UTF-8", RepoFault.BAD_OPS) from None
    if action not in ("create", "update", "delete"):
        raise InvalidRepo(f"unknown op action {str(action)[:40]!r}", RepoFault.BAD_OPS)
    if action != "create" and not isinstance(op.prev, bytes):
        raise InvalidRepo(f"{action} of {path[:200]} without prev", RepoFault.BAD_OPS)
    if action != "create" and op.prev is not None:
        _value_cid(op.prev)
    held = tree.get(key)
    if action == "delete":
        if held is not None:
            raise InvalidRepo(f"deleted {path[:200]} is still in the tree", RepoFault.BAD_OPS)
    elif not isinstance(op.cid, bytes) or held != op.cid:
        raise InvalidRepo(f"{action} of {path[:200]} does not match the tree", RepoFault.BAD_OPS)
    return key


# --- what a host sends ------------------------------------------------------------------


def proof_blocks(root: bytes, get_block: BlockGetter, ops: Sequence[RepoOpLike]) -> set[bytes]:
    """The CIDs of the new tree's nodes that `invert_ops` reads: the covering proof of the
    ops (paths to each op's key, and for a create the paths to its neighbours)."""
    read: set[bytes] = set()

    def recording(cid: bytes) -> bytes:
        read.add(cid)
        return get_block(cid)

    invert_ops(root, recording, ops)
    return read


def diff_blocks(old_root: bytes | None, new_root: bytes, get_block: BlockGetter) -> set[bytes]:
    """The CIDs of the nodes of the tree at `new_root` that are not in the tree at
    `old_root` (None: no earlier tree): the nodes a commit creates."""
    old = _node_cids(old_root, get_block, set()) if old_root is not None else set()
    return _node_cids(new_root, get_block, old)


def _node_cids(root: bytes, get_block: BlockGetter, skip: set[bytes]) -> set[bytes]:
    """Every node CID of a tree except the subtrees at a CID in `skip`."""
    found: set[bytes] = set()
    stack = [root]
    while stack:
        cid = stack.pop()
        if cid in skip or cid in found:
            continue
        found.add(cid)
        stack.extend(c for c in decode_node(get_block(cid))[3] if c is not None)
    return found

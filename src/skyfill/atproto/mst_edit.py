"""Editing a partial MST, and the MST check of sync 1.1: inverting a commit's ops.

A `#commit` event carries only a slice of the repository: the new commit, the changed
records, and the MST nodes the consumer needs. `invert_ops` starts from the commit's new MST
root, checks each op against it (a create or update's key holds `op.cid`, a delete's key is
absent), undoes the ops in reverse order, and returns the resulting root CID: it must equal
the event's `prevData`, the root before the commit.

`PartialMST` loads nodes lazily through a block getter, so a subtree that is never touched
stays a CID and never needs to be in the slice. Changed nodes are re-encoded exactly as
`mst.build` encodes them, so an edited tree's root is byte-identical to a tree built from
scratch over the same keys (the MST is canonical: a key sits at layer `key_layer(key)`,
keys are prefix-compressed within a node, an empty subtree is null, an empty top is trimmed).

Which nodes does the inversion read? For every op key, the path from the root down to the
key (or to where it would be: a proof of its absence). For a create, whose undoing removes
the key and merges the subtrees on either side of it, also the right edge of the subtree
left of the key and the left edge of the one right of it: the paths to the key's neighbours
in the new tree. This is the "covering proof" a host adds to the slice; `proof_blocks`
computes exactly the set this module reads, and `diff_blocks` the nodes of the new tree that
were not in the old one, so that a simulated host can send `diff ∪ proof` as a minimal slice.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import cbrrr

from skyfill.atproto.cid import block_matches_cid, cid_for_block
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.mst import common_prefix, key_layer

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
class _Entry:
    key: bytes
    value: cbrrr.CID
    right: _Child


@dataclass(slots=True)
class _Node:
    layer: int
    left: _Child
    entries: list[_Entry]
    cid: bytes | None
    """The node's CID while it is as loaded; None once changed (then re-encoded)."""


# A subtree: absent, not loaded yet (its CID), or loaded.
_Child = bytes | _Node | None


def _entry_key(entry: _Entry) -> bytes:
    return entry.key


class PartialMST:
    """An MST of which only the nodes read so far are in memory.

    Every read goes through `get_block`; a block it lacks (it raises InvalidRepo or
    KeyError) is `missing_proof`, a block that does not hash to its CID `cid_mismatch`, a
    node that is not a canonical MST node `mst_malformed` / `mst_key_layer` / `mst_key_order`.
    Nodes created by edits are kept in `blocks` by `root()`.
    """

    def __init__(self, root: bytes, get_block: BlockGetter) -> None:
        self._get_block = get_block
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
            i = bisect.bisect_left(node.entries, key, key=_entry_key)
            if node.layer == layer:
                if i < len(node.entries) and node.entries[i].key == key:
                    return bytes(node.entries[i].value)
                return None
            lo, hi = _gap_bounds(node, i, lo, hi)
            node = self._slot(node, i, lo, hi)
        return None

    def put(self, key: bytes, value: bytes) -> bytes | None:
        """Store `value` under `key` (insert or replace); return the value it replaced."""
        layer = key_layer(key)
        cid = _value_cid(value)
        root = self._root_node()
        if root is None:
            root = _Node(layer, None, [], None)
        while root.layer < layer:
            root = _Node(root.layer + 1, root, [], None)
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
            return self._store(cbrrr.encode_dag_cbor({"l": None, "e": []}))
        return self._encode(self._root)

    # --- loading ----------------------------------------------------------------------

    def _root_node(self) -> _Node | None:
        if not self._root_loaded:
            self._root_loaded = True
            if isinstance(self._root, bytes):
                self._root = self._load_root(self._root)
        assert not isinstance(self._root, bytes)
        return self._root

    def _load_root(self, cid: bytes) -> _Node | None:
        layer, left, entries = self._read(cid)
        if layer is None:
            if left is not None:
                raise InvalidRepo("MST root has no keys but a subtree", MALFORMED)
            return None
        return _leaf_check(_Node(layer, left, entries, cid))

    def _load(self, child: _Child, layer: int, lo: bytes | None, hi: bytes | None) -> _Node | None:
        """The node of a subtree one layer below its parent, loaded if it was a CID."""
        if not isinstance(child, bytes):
            return child
        if layer < 0:  # below a leaf node: refused when that node was loaded
            raise InvalidRepo("MST leaf-layer node has a subtree", MALFORMED)
        found, left, entries = self._read(child)
        if found is None:
            if left is None:
                raise InvalidRepo("MST subtree is an empty node", MALFORMED)
        elif found != layer:
            raise InvalidRepo(
                f"MST node at layer {found} where layer {layer} belongs", RepoFault.MST_KEY_LAYER
            )
        if entries and (
            (lo is not None and entries[0].key <= lo) or (hi is not None and entries[-1].key >= hi)
        ):
            raise InvalidRepo(
                "MST node holds keys outside its parent's range", RepoFault.MST_KEY_ORDER
            )
        return _leaf_check(_Node(layer, left, entries, child))

    def _slot(self, node: _Node, i: int, lo: bytes | None, hi: bytes | None) -> _Node | None:
        """Load the subtree in gap `i` of `node` (bounded by lo, hi) and keep it there."""
        child = self._load(_get_slot(node, i), node.layer - 1, lo, hi)
        _set_slot(node, i, child)
        return child

    def _read(self, cid: bytes) -> tuple[int | None, _Child, list[_Entry]]:
        """Fetch and decode a node: (layer of its keys or None if it has none, l, entries)."""
        try:
            block = self._get_block(cid)
        except (InvalidRepo, KeyError, LookupError):
            raise InvalidRepo(
                f"MST node {cid.hex()[:16]}… needed for the inversion is not in the slice",
                RepoFault.MISSING_PROOF,
            ) from None
        if not isinstance(block, bytes) or not block_matches_cid(cid, block):
            raise InvalidRepo("MST node does not match its CID", RepoFault.CID_MISMATCH)
        try:
            node = cbrrr.decode_dag_cbor(block)
        except Exception as exc:
            raise InvalidRepo(f"MST node is not valid DAG-CBOR: {exc}", MALFORMED) from None
        return _parse_node(node)

    # --- editing ----------------------------------------------------------------------

    def _put(
        self,
        node: _Node,
        key: bytes,
        value: cbrrr.CID,
        layer: int,
        lo: bytes | None,
        hi: bytes | None,
    ) -> bytes | None:
        i = bisect.bisect_left(node.entries, key, key=_entry_key)
        if node.layer == layer:
            entries = node.entries
            if i < len(entries) and entries[i].key == key:
                old = entries[i].value
                if old != value:
                    entries[i].value = value
                    node.cid = None
                return bytes(old)
            glo, ghi = _gap_bounds(node, i, lo, hi)
            below, above = self._split(self._slot(node, i, glo, ghi), key, glo, ghi)
            _set_slot(node, i, below)
            entries.insert(i, _Entry(key, value, above))
            node.cid = None
            return None
        clo, chi = _gap_bounds(node, i, lo, hi)
        child = self._slot(node, i, clo, chi)
        if child is None:
            child = _Node(node.layer - 1, None, [], None)
            _set_slot(node, i, child)
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
        i = bisect.bisect_left(node.entries, key, key=_entry_key)
        glo, ghi = _gap_bounds(node, i, lo, hi)
        below, above = self._split(self._slot(node, i, glo, ghi), key, glo, ghi)
        low_entries, high_entries = node.entries[:i], node.entries[i:]
        if low_entries:
            low = _Node(node.layer, node.left, low_entries, None)
            low_entries[-1].right = below
        else:
            low = _Node(node.layer, below, [], None)
        high = _Node(node.layer, above, high_entries, None)
        return _nonempty(low), _nonempty(high)

    def _delete(
        self, node: _Node, key: bytes, layer: int, lo: bytes | None, hi: bytes | None
    ) -> bytes | None:
        i = bisect.bisect_left(node.entries, key, key=_entry_key)
        if node.layer == layer:
            if i == len(node.entries) or node.entries[i].key != key:
                return None
            removed = node.entries.pop(i)
            merged = self._merge(
                _get_slot(node, i), removed.right, node.layer - 1, _gap_bounds(node, i, lo, hi), key
            )
            _set_slot(node, i, merged)
            node.cid = None
            return bytes(removed.value)
        if node.layer < layer:
            return None
        clo, chi = _gap_bounds(node, i, lo, hi)
        child = self._slot(node, i, clo, chi)
        if child is None:
            return None
        removed_value = self._delete(child, key, layer, clo, chi)
        if removed_value is not None:
            node.cid = None
            _set_slot(node, i, _nonempty(child))
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
        a_last = a.entries[-1].key if a.entries else bounds[0]
        b_first = b.entries[0].key if b.entries else bounds[1]
        inner = self._merge(
            _get_slot(a, len(a.entries)), b.left, layer - 1, (a_last, b_first), middle
        )
        entries = a.entries + b.entries
        if a.entries:
            a.entries[-1].right = inner
            return _Node(layer, a.left, entries, None)
        return _Node(layer, inner, entries, None)

    def _trim_top(self, root: _Node) -> _Node | None:
        """Drop keyless nodes from the top (the canonical root holds the highest keys)."""
        node: _Node | None = root
        while node is not None and not node.entries:
            if node.left is None:
                return None
            node = self._load(node.left, node.layer - 1, None, None)
        return node

    # --- encoding ---------------------------------------------------------------------

    def _encode(self, node: _Node) -> bytes:
        if node.cid is not None:
            return node.cid
        entries = []
        previous = b""
        for entry in node.entries:
            prefix = common_prefix(previous, entry.key)
            entries.append(
                {
                    "p": prefix,
                    "k": entry.key[prefix:],
                    "v": entry.value,
                    "t": self._link(entry.right),
                }
            )
            previous = entry.key
        node.cid = self._store(cbrrr.encode_dag_cbor({"l": self._link(node.left), "e": entries}))
        return node.cid

    def _link(self, child: _Child) -> cbrrr.CID | None:
        if child is None:
            return None
        if isinstance(child, bytes):
            return cbrrr.CID(child)
        return cbrrr.CID(self._encode(child))

    def _store(self, block: bytes) -> bytes:
        cid = cid_for_block(block)
        self.blocks[cid] = block
        return cid


def _get_slot(node: _Node, i: int) -> _Child:
    return node.left if i == 0 else node.entries[i - 1].right


def _set_slot(node: _Node, i: int, child: _Child) -> None:
    if i == 0:
        node.left = child
    else:
        node.entries[i - 1].right = child


def _gap_bounds(
    node: _Node, i: int, lo: bytes | None, hi: bytes | None
) -> tuple[bytes | None, bytes | None]:
    """The key range of gap `i` of a node whose own range is (lo, hi)."""
    entries = node.entries
    return (entries[i - 1].key if i else lo, entries[i].key if i < len(entries) else hi)


def _leaf_check(node: _Node) -> _Node:
    """`node` unless it is on the leaf layer and has a subtree."""
    if node.layer == 0 and (
        node.left is not None or any(entry.right is not None for entry in node.entries)
    ):
        raise InvalidRepo("MST leaf-layer node has a subtree", MALFORMED)
    return node


def _nonempty(node: _Node | None) -> _Node | None:
    if node is None or (not node.entries and node.left is None):
        return None
    return node


def _parse_node(node: object) -> tuple[int | None, _Child, list[_Entry]]:
    if not isinstance(node, dict) or not isinstance(entries := node.get("e"), list):
        raise InvalidRepo("MST node lacks its entry list", MALFORMED)
    left = _link_bytes(node.get("l"))
    parsed: list[_Entry] = []
    previous = b""
    layer: int | None = None
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidRepo("MST entry is not a map", MALFORMED)
        prefix, suffix, value = entry.get("p"), entry.get("k"), entry.get("v")
        if (
            type(prefix) is not int
            or not 0 <= prefix <= len(previous)
            or not isinstance(suffix, bytes)
            or not isinstance(value, cbrrr.CID)
        ):
            raise InvalidRepo("malformed MST entry", MALFORMED)
        key = previous[:prefix] + suffix
        if parsed and key <= previous:
            raise InvalidRepo(f"MST keys out of order at {key[:80]!r}", RepoFault.MST_KEY_ORDER)
        if layer is None:
            layer = key_layer(key)
        elif key_layer(key) != layer:
            raise InvalidRepo(f"MST key {key[:80]!r} at the wrong layer", RepoFault.MST_KEY_LAYER)
        parsed.append(_Entry(key, value, _link_bytes(entry.get("t"))))
        previous = key
    return layer, left, parsed


def _link_bytes(link: object) -> bytes | None:
    if link is None:
        return None
    if not isinstance(link, cbrrr.CID):
        raise InvalidRepo("MST subtree pointer is not a CID", MALFORMED)
    return bytes(link)


def _value_cid(value: bytes) -> cbrrr.CID:
    """A record CID as the tree stores it; atproto's are CIDv1 with a sha-256 digest."""
    if (
        not isinstance(value, bytes)
        or len(value) != 36
        or value[0] != 1
        or value[2:4] != b"\x12\x20"
    ):
        raise InvalidRepo("a record CID is not a sha-256 CIDv1", RepoFault.BAD_OPS)
    return cbrrr.CID(value)


# --- sync 1.1 ---------------------------------------------------------------------------


def invert_ops(root: bytes, get_block: BlockGetter, ops: Sequence[RepoOpLike]) -> bytes:
    """The MST root before a commit: undo its `ops` on the tree at `root` (the commit's
    `data`) and return the root CID reached, to compare with the event's `prevData`.

    Raises InvalidRepo: `bad_ops` when an op does not match the new tree (a create or update
    whose key does not hold its cid, a delete whose key is present, an update or delete
    without `prev`, a path twice, an unknown action), `missing_proof` when a node the
    inversion needs is not in the slice, or the kind of a malformed node.
    """
    tree = PartialMST(root, get_block)
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
        node = cbrrr.decode_dag_cbor(get_block(cid))
        _, left, entries = _parse_node(node)
        stack.extend(c for c in [left, *(e.right for e in entries)] if isinstance(c, bytes))
    return found

"""The Merkle Search Tree of an atproto repository: verified in-order walk, and building.

A node is `{l: CID|null, e: [{p: prefix_len, k: key_suffix, v: value CID, t: CID|null}]}`.
Every key of a node sits at that node's layer (leading zero bits of sha256(key), in pairs);
`l` and each entry's `t` point to subtrees one layer down. The walk checks the structure,
the key order and each key's layer, so that a repository that does not verify is refused.
It checks the order as it goes, so a node linked from several places (which repeats keys)
is refused at its second visit rather than walked again and again; and it goes no deeper
than MAX_DEPTH nodes (a sha-256 has 128 layers), so a chain of empty nodes cannot exhaust
the stack.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import cbrrr
import libipld

from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.exceptions import InvalidRepo, RepoFault

MALFORMED = RepoFault.MST_MALFORMED
MAX_DEPTH = 256

BlockGetter = Callable[[bytes], bytes]


def key_layer(key: bytes) -> int:
    """The MST layer of a key: leading zero bits of its sha-256, counted in pairs."""
    return digest_layer(hashlib.sha256(key).digest())


def digest_layer(digest: bytes) -> int:
    """The MST layer of a key whose sha-256 is `digest`."""
    first = digest[0]
    if first:  # layers 0 to 3: all but one key in about 65 000
        return _BYTE_LAYER[first]
    return (256 - int.from_bytes(digest).bit_length()) // 2


# The layer of a digest by its first byte when that byte is not zero: (8 - bit_length) // 2.
_BYTE_LAYER = bytes((8 - n.bit_length()) // 2 for n in range(256))


def _decode_node(get_block: BlockGetter, cid: bytes) -> dict:
    try:
        node = libipld.decode_dag_cbor(get_block(cid))
    except InvalidRepo:
        raise
    except Exception as exc:
        raise InvalidRepo(f"MST node is not valid DAG-CBOR: {exc}", MALFORMED) from None
    if not isinstance(node, dict) or not isinstance(node.get("e"), list):
        raise InvalidRepo("MST node lacks its entry list", MALFORMED)
    return node


def walk(get_block: BlockGetter, root: bytes) -> Iterator[tuple[bytes, bytes]]:
    """Yield every (key, value CID) of the tree in key order, verifying it on the way."""
    keys, values = collect(get_block, root)
    return zip(keys, values, strict=True)


def collect(get_block: BlockGetter, root: bytes) -> tuple[list[bytes], list[bytes]]:
    """Every key and value CID of the tree, in key order; raises InvalidRepo if it does
    not verify (structure, key order, each key at its layer)."""
    keys: list[bytes] = []
    values: list[bytes] = []
    _collect(get_block, root, None, keys, values, 0)
    return keys, values


def _collect(
    get_block: BlockGetter,
    cid: bytes,
    layer: int | None,
    keys: list[bytes],
    values: list[bytes],
    depth: int,
) -> None:
    if depth >= MAX_DEPTH:
        raise InvalidRepo(f"MST deeper than {MAX_DEPTH} nodes", MALFORMED)
    node = _decode_node(get_block, cid)
    entries = node["e"]
    left = node.get("l")
    node_keys = _entry_keys(entries)
    if node_keys:
        first_layer = key_layer(node_keys[0])
        if layer is not None and first_layer != layer:
            raise InvalidRepo(
                f"MST node at layer {first_layer} where layer {layer} belongs",
                RepoFault.MST_KEY_LAYER,
            )
        layer = first_layer
    below = None if layer is None else layer - 1
    if left is not None:
        _check_child(left, layer)
        _collect(get_block, left, below, keys, values, depth + 1)
    for key, entry in zip(node_keys, entries, strict=True):
        if key_layer(key) != layer:
            raise InvalidRepo(
                f"MST key {key[:80]!r} is stored at the wrong layer", RepoFault.MST_KEY_LAYER
            )
        if keys and key <= keys[-1]:
            raise InvalidRepo(f"MST keys out of order at {key[:80]!r}", RepoFault.MST_KEY_ORDER)
        keys.append(key)
        values.append(entry["v"])
        subtree = entry.get("t")
        if subtree is not None:
            _check_child(subtree, layer)
            _collect(get_block, subtree, below, keys, values, depth + 1)


def _entry_keys(entries: list) -> list[bytes]:
    """Full keys of a node's entries (each stores its suffix after a shared prefix)."""
    keys = []
    previous = b""
    for entry in entries:
        try:
            prefix, suffix, value = entry["p"], entry["k"], entry["v"]
        except (KeyError, TypeError):
            raise InvalidRepo("MST entry lacks p, k or v", MALFORMED) from None
        if (
            type(prefix) is not int
            or not 0 <= prefix <= len(previous)
            or not isinstance(suffix, bytes)
            or not isinstance(value, bytes)
        ):
            raise InvalidRepo("malformed MST entry", MALFORMED)
        previous = previous[:prefix] + suffix
        keys.append(previous)
    return keys


def _check_child(cid: object, layer: int | None) -> None:
    if not isinstance(cid, bytes):
        raise InvalidRepo("MST subtree pointer is not a CID", MALFORMED)
    if layer == 0:
        raise InvalidRepo("MST leaf-layer node has a subtree", MALFORMED)


def build(items: list[tuple[bytes, bytes]], blocks: dict[bytes, bytes]) -> bytes:
    """Build the MST of sorted, unique (key, value CID) pairs; store nodes in `blocks`.

    Returns the root node's CID. Used by the simulated network to serve real repos.
    """
    layered = [(key, value, key_layer(key)) for key, value in items]
    top = max((layer for _, _, layer in layered), default=0)
    return _build_node(layered, top, blocks)


def _build_node(items: list[tuple[bytes, bytes, int]], layer: int, blocks: dict) -> bytes:
    entries: list[dict] = []
    left: bytes | None = None
    pending: list[tuple[bytes, bytes, int]] = []
    prev_key = b""
    for item in items:
        if item[2] < layer:
            pending.append(item)
            continue
        subtree = _build_node(pending, layer - 1, blocks) if pending else None
        pending = []
        if entries:
            entries[-1]["t"] = cbrrr.CID(subtree) if subtree else None
        else:
            left = subtree
        key = item[0]
        prefix = common_prefix(prev_key, key)
        entries.append({"p": prefix, "k": key[prefix:], "v": cbrrr.CID(item[1]), "t": None})
        prev_key = key
    if pending:
        subtree = _build_node(pending, layer - 1, blocks)
        if entries:
            entries[-1]["t"] = cbrrr.CID(subtree)
        else:
            left = subtree
    node = {"l": cbrrr.CID(left) if left else None, "e": entries}
    block = cbrrr.encode_dag_cbor(node)
    cid = cid_for_block(block)
    blocks[cid] = block
    return cid


def common_prefix(a: bytes, b: bytes) -> int:
    """How many leading bytes `a` and `b` share (an MST entry stores its key after them)."""
    n = min(len(a), len(b))
    a, b = a[:n], b[:n]
    if a == b:
        return n
    # the first differing byte is the highest one set in a XOR b, read as big-endian ints
    differ = int.from_bytes(a) ^ int.from_bytes(b)
    return n - (differ.bit_length() + 7) // 8

"""The MST node codec of `mst_edit`: a node block to its keys, values and subtrees, and back.

A node is the DAG-CBOR map `{e: [{k, p, t, v}...], l}` (see `mst`). Decoding checks it as
`mst_edit` always has: entries well formed, keys in order, every key on the node's layer.
A block that is exactly the canonical encoding of its node (nearly every block) takes a
fast path: libipld decodes it and what it gives is encoded again; when that gives back the
block, the block holds what cbrrr would decode from it, though libipld types CIDs and byte
strings alike. Anything else goes through cbrrr, whose CIDs come out as `Link` (a bytes
subclass, so a CID and a byte string stay apart), and that path says what is wrong. Either
way the CIDs come back as plain bytes.

Encoding writes the canonical DAG-CBOR bytes directly (map keys in canonical order: `e`
before `l`, `k p t v` in an entry; minimal-length heads; a CID as tag 42 over its bytes
behind a 0x00 multibase prefix), byte for byte what `cbrrr.encode_dag_cbor` gives for the
same node as `mst.build` writes it (tests/atproto/test_mst_node.py). A node read through the
fast path is encoded again from its block where it can be: with only subtrees changed, the
block with their CIDs replaced; else each entry as read whose neighbourhood is unchanged.
"""

from __future__ import annotations

from hashlib import sha256

import cbrrr
import libipld

from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.mst import common_prefix, digest_layer, key_layer

MALFORMED = RepoFault.MST_MALFORMED


class Link(bytes):
    """A CID as a node decoded by cbrrr holds it: its bytes, typed apart from a byte string."""

    __slots__ = ()


# A decoded node: the layer of its keys (None when it has none), its keys, their value CIDs,
# its len(keys) + 1 subtrees (subs[i] holds the keys between keys[i - 1] and keys[i]), and,
# when the block is exactly as `encode_node` writes that node, its entries' bytes (else None).
Decoded = tuple[int | None, list[bytes], list[bytes], list[bytes | None], list[bytes] | None]


def decode_node(block: bytes) -> Decoded:
    """Decode and check an MST node block; InvalidRepo (`mst_malformed`, `mst_key_order`,
    `mst_key_layer`) if it is not one."""
    fast = _decode_canonical(block)
    return fast if fast is not None else _decode_checked(block)


def _small_head(major: int, n: int) -> bytes:
    """The minimal CBOR head of major type `major` (shifted: 0x40 a byte string), n < 256."""
    return bytes([major | n] if n < 24 else [major | 24, n])


# Canonical pieces by a length, count or prefix under 256: the head of a tag-42 CID (its byte
# string holds a 0x00 and the CID); an entry's map head and `k` key with its suffix's head;
# its `p` key, prefix and `t` key; its `v` key and its CID's head; the entry list's head.
_NULL = b"\xf6"
_CID_HEADS = [b"\xd8\x2a" + _small_head(0x40, n + 1) + b"\x00" for n in range(255)]
_K_FIELDS = [b"\xa4\x61k" + _small_head(0x40, n) for n in range(256)]
_P_FIELDS = {n: b"\x61p" + _small_head(0, n) + b"\x61t" for n in range(256)}  # no p[-1]
_V_FIELDS = [b"\x61v" + head for head in _CID_HEADS]
_ARRAY_HEADS = [_small_head(0x80, n) for n in range(256)]


def _decode_canonical(block: bytes) -> Decoded | None:
    """The node if `block` is the canonical encoding of a well-formed one with keys, prefixes,
    CIDs and entry counts under 256 (nearly every node), each prefix the longest; None for
    anything else (`_decode_checked` then decodes it, or says what is wrong).

    libipld decodes the block, and what it gives is encoded again as this node must be (key
    suffixes as byte strings, values and subtrees as CIDs): if that is the block, cbrrr
    decodes the block to the same node, whatever libipld does with a block that is not
    canonical or with a CID where a byte string belongs (it gives both as bytes)."""
    try:
        node = libipld.decode_dag_cbor(block)
        entries, left = node["e"], node["l"]
        keys: list[bytes] = []
        values: list[bytes] = []
        subs: list[bytes | None] = [left]
        raws: list[bytes] = []
        previous = b""
        k_fields, p_fields, v_fields, cid_heads = _K_FIELDS, _P_FIELDS, _V_FIELDS, _CID_HEADS
        for entry in entries:
            suffix, prefix, subtree, value = entry.values()  # k, p, t, v: the encoding says
            # a prefix longer than the previous key, or not the longest: not canonical
            if prefix > len(previous) or previous[prefix : prefix + 1] == suffix[:1]:
                return None
            key = previous[:prefix] + suffix
            if key <= previous and keys:
                return None
            raws.append(
                b"".join(
                    (
                        k_fields[len(suffix)],
                        suffix,
                        p_fields[prefix],
                        _NULL if subtree is None else cid_heads[len(subtree)] + subtree,
                        v_fields[len(value)],
                        value,
                    )
                )
            )
            keys.append(key)
            values.append(value)
            subs.append(subtree)
            previous = key
        tail = _NULL if left is None else cid_heads[len(left)] + left
        encoded = b"".join((b"\xa2\x61e", _ARRAY_HEADS[len(raws)], *raws, b"\x61l", tail))
    except Exception:  # not DAG-CBOR, a field missing or of another type, a length over 255
        return None
    if encoded != block:
        return None
    layer = _common_layer(keys)
    if layer is None and keys:
        return None
    return layer, keys, values, subs, raws


# The digests of the keys on layer L: from _LOWEST[L] up to, not including, _ABOVE[L] (2L or
# 2L + 1 leading zero bits), as 32-byte big-endian numbers.
_LOWEST = [(1 << max(254 - 2 * layer, 0)).to_bytes(32) for layer in range(128)] + [bytes(32)]
_ABOVE = [b"\xff" * 33] + [(1 << (256 - 2 * layer)).to_bytes(32) for layer in range(1, 129)]


def _common_layer(keys: list[bytes]) -> int | None:
    """The layer of `keys` if they all have the same (None if not, or no keys)."""
    if not keys:
        return None
    digests = [sha256(key).digest() for key in keys]
    layer = digest_layer(digests[0])
    if _LOWEST[layer] <= min(digests) and max(digests) < _ABOVE[layer]:
        return layer
    return None


def _decode_checked(block: bytes) -> Decoded:
    """Decode through cbrrr and check each field: any node, and the error of a bad one."""
    try:
        node = cbrrr.decode_dag_cbor(block, cid_ctor=Link)
    except Exception as exc:
        raise InvalidRepo(f"MST node is not valid DAG-CBOR: {exc}", MALFORMED) from None
    if not isinstance(node, dict) or not isinstance(entries := node.get("e"), list):
        raise InvalidRepo("MST node lacks its entry list", MALFORMED)
    subs = [_link(node.get("l"))]
    keys: list[bytes] = []
    values: list[bytes] = []
    previous = b""
    layer: int | None = None
    for entry in entries:
        if not isinstance(entry, dict):
            raise InvalidRepo("MST entry is not a map", MALFORMED)
        key, value = _entry(entry, previous)
        if keys and key <= previous:
            raise InvalidRepo(f"MST keys out of order at {key[:80]!r}", RepoFault.MST_KEY_ORDER)
        if layer is None:
            layer = key_layer(key)
        elif key_layer(key) != layer:
            raise InvalidRepo(f"MST key {key[:80]!r} at the wrong layer", RepoFault.MST_KEY_LAYER)
        keys.append(key)
        values.append(value)
        subs.append(_link(entry.get("t")))
        previous = key
    return layer, keys, values, subs, None


def _entry(entry: dict, previous: bytes) -> tuple[bytes, bytes]:
    """An entry's full key (its suffix after `previous`'s shared prefix) and value CID."""
    prefix, suffix, value = entry.get("p"), entry.get("k"), entry.get("v")
    if (
        type(prefix) is not int
        or not 0 <= prefix <= len(previous)
        or type(suffix) is not bytes
        or type(value) is not Link
    ):
        raise InvalidRepo("malformed MST entry", MALFORMED)
    return previous[:prefix] + suffix, bytes(value)


def _link(link: object) -> bytes | None:
    if link is None:
        return None
    if type(link) is Link:
        return bytes(link)
    raise InvalidRepo("MST subtree pointer is not a CID", MALFORMED)


# --- encoding -------------------------------------------------------------------------------


def encode_node(
    keys: list[bytes],
    values: list[bytes],
    subs: list[bytes | None],
    read: tuple[bytes, Decoded] | None = None,
) -> bytes:
    """The canonical DAG-CBOR block of a node: sorted `keys`, their `values`, and its
    len(keys) + 1 subtree CIDs (None for an empty one).

    `read`: the block the node was decoded from and what it held. If that block was exactly
    its node's encoding, what has not changed since is reused: the whole block with the CIDs
    of changed subtrees replaced when only subtrees have changed, else each entry whose key,
    value, subtree and previous key (on which its prefix depends) are as read."""
    as_read: dict[bytes, tuple[bytes, bytes, bytes | None, bytes]] = {}
    if read is not None and (raws := read[1][4]) is not None:
        block, (_, read_keys, read_values, read_subs, _) = read
        if keys == read_keys and values == read_values:
            spliced = _spliced(block, read_subs, subs)
            if spliced is not None:
                return spliced
        previous_keys = [b"", *read_keys][: len(read_keys)]
        entries = zip(previous_keys, read_values, read_subs[1:], raws, strict=True)
        as_read = dict(zip(read_keys, entries, strict=True))
    out = [b"\xa2\x61e", _head(0x80, len(keys))]
    previous = b""
    for key, value, subtree in zip(keys, values, subs[1:], strict=True):
        known = as_read.get(key)
        if known is not None and known[:3] == (previous, value, subtree):
            out.append(known[3])
        else:
            out.append(_new_entry(previous, key, value, subtree))
        previous = key
    out += (b"\x61l", _cid(subs[0]))
    return b"".join(out)


def _spliced(block: bytes, old: list[bytes | None], new: list[bytes | None]) -> bytes | None:
    """`block` with each subtree CID of `old` that `new` changes replaced by its new one, or
    None unless both are CIDs of one length and the old one occurs once in the block (then at
    its own place: the bytes change there only, and the result is canonical as `block` was)."""
    for before, after in zip(old, new, strict=True):
        if before != after:
            if before is None or after is None or len(before) != len(after):
                return None
            if block.count(before) != 1:
                return None
            block = block.replace(before, after)
    return block


def _new_entry(previous: bytes, key: bytes, value: bytes, subtree: bytes | None) -> bytes:
    """An entry's bytes: map head, `k` (the key after its prefix shared with `previous`),
    `p` (that prefix's length), `t` and `v`."""
    prefix = common_prefix(previous, key)
    suffix = key[prefix:]
    return b"".join(
        (
            b"\xa4\x61k",
            _head(0x40, len(suffix)),
            suffix,
            b"\x61p",
            _head(0, prefix),
            b"\x61t",
            _cid(subtree),
            b"\x61v",
            _cid(value),
        )
    )


def _cid(cid: bytes | None) -> bytes:
    if cid is None:
        return _NULL
    return b"\xd8\x2a" + _head(0x40, len(cid) + 1) + b"\x00" + cid


def _head(major: int, n: int) -> bytes:
    """The minimal CBOR head of major type `major` (shifted: 0x40 a byte string) and `n`."""
    if n < 256:
        return _small_head(major, n)
    if n < 0x10000:
        return bytes([major | 25]) + n.to_bytes(2)
    if n < 0x100000000:
        return bytes([major | 26]) + n.to_bytes(4)
    return bytes([major | 27]) + n.to_bytes(8)

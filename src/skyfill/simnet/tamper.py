"""The repo an account's PDS serves: signed with the account's key, or broken the way its
fault says (a bad signature, or a tree that breaks an MST rule under a valid signature).

`build_served_repo(account, rev)` is what the network builds for every account, at the start
and after every edit; it returns what `skyfill.atproto.repo.build_repo` returns (CAR
bytes, commit CID, each path's record CID).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import cbrrr

from skyfill.atproto import mst
from skyfill.atproto.car import read_car, write_car
from skyfill.atproto.cid import cid_for_block, cid_from_str, cid_to_str
from skyfill.atproto.crypto import high_s
from skyfill.atproto.repo import build_repo
from skyfill.atproto.tid import encode_tid
from skyfill.simnet.accounts import BASE_TIME, Account
from skyfill.simnet.keys import signing_key, wrong_key

SIGNATURE_FAULTS = ("sig_wrong_key", "sig_high_s", "sig_flipped_bit", "sig_missing")
MST_FAULTS = ("mst_invalid_key", "mst_unsorted", "mst_wrong_layer")
INVALID_PATH = "app.bsky.feed.post/not/a-record-key"
"""Where `mst_invalid_key` stores a record: two slashes, so not `<collection>/<rkey>`."""

Built = tuple[bytes, str, dict[str, str]]
Sign = Callable[[bytes], bytes]
Items = list[tuple[bytes, bytes]]


def build_served_repo(account: Account, rev: str) -> Built:
    """The account's repo at `rev` as its PDS serves it (see the module docstring)."""
    did, records, fault = account.did, account.records, account.fault
    key = signing_key(account)
    if fault == "sig_wrong_key":
        return build_repo(did, rev, records, sign=wrong_key(account).sign)
    if fault == "sig_high_s":
        return build_repo(did, rev, records, sign=lambda m: high_s(key.curve, key.sign(m)))
    if fault == "sig_flipped_bit":
        return build_repo(did, rev, records, sign=lambda m: flip_bit(key.sign(m)))
    if fault == "sig_missing":
        car, _, paths = build_repo(did, rev, records, sign=key.sign)
        return *recommit(car, sign=None), paths
    if fault == "mst_invalid_key":
        return build_repo(did, rev, records | {INVALID_PATH: _filler(0)}, sign=key.sign)
    if fault == "mst_unsorted":
        return _with_tree(did, rev, records, key.sign, _adjacent_pair_of_one_layer, unsorted_tree)
    if fault == "mst_wrong_layer":
        return _with_tree(did, rev, records, key.sign, _two_layers, flat_tree)
    return build_repo(did, rev, records, sign=key.sign)


def flip_bit(signature: bytes, at: int = 5) -> bytes:
    """The signature with one bit of byte `at` (in `r`) flipped."""
    return signature[:at] + bytes([signature[at] ^ 0x10]) + signature[at + 1 :]


def recommit(
    car: bytes,
    sign: Sign | None,
    data: bytes | None = None,
    blocks: dict[bytes, bytes] | None = None,
) -> tuple[bytes, str]:
    """The CAR with its commit made again: pointing at tree `data` (its nodes and the
    records in `blocks`, which then replace the CAR's other blocks), signed by `sign`, or
    with no `sig` field at all when `sign` is None. Returns the CAR and the commit CID."""
    parsed = read_car(car)
    root = parsed.roots[0]
    commit = cbrrr.decode_dag_cbor(parsed.blocks[root])
    assert isinstance(commit, dict)
    commit.pop("sig", None)
    if data is not None:
        commit["data"] = cbrrr.CID(data)
    if sign is not None:
        commit["sig"] = sign(cbrrr.encode_dag_cbor(commit))
    block = cbrrr.encode_dag_cbor(commit)
    cid = cid_for_block(block)
    kept = blocks if blocks is not None else {c: b for c, b in parsed.blocks.items() if c != root}
    return write_car([cid], [(cid, block), *kept.items()]), cid_to_str(cid)


def unsorted_tree(items: Items, blocks: dict[bytes, bytes]) -> bytes:
    """The MST of `items` with the first two neighbouring keys of one layer swapped: they
    sit side by side in one node, out of order; every block still matches its CID."""
    at = next(i for i, (a, b) in enumerate(pairwise(items)) if _same_layer(a[0], b[0]))
    swapped = [*items[:at], items[at + 1], items[at], *items[at + 2 :]]
    return mst.build(swapped, blocks)  # it builds in the order it is given


def flat_tree(items: Items, blocks: dict[bytes, bytes]) -> bytes:
    """A tree built by hand: every key in one node, so the keys of layers other than the
    first key's sit in a node of the wrong layer."""
    entries: list[dict] = []
    previous = b""
    for key, value in items:
        prefix = _common_prefix(previous, key)
        entries.append({"p": prefix, "k": key[prefix:], "v": cbrrr.CID(value), "t": None})
        previous = key
    node: dict = {"l": None, "e": entries}
    block = cbrrr.encode_dag_cbor(node)
    cid = cid_for_block(block)
    blocks[cid] = block
    return cid


def _with_tree(
    did: str,
    rev: str,
    records: dict[str, dict],
    sign: Sign,
    usable: Callable[[list[bytes]], bool],
    tree: Callable[[Items, dict[bytes, bytes]], bytes],
) -> Built:
    """The records (with filler posts until `usable(keys)`) under a tree made by `tree`,
    committed and signed by `sign`."""
    records = dict(records)
    while not usable(sorted(path.encode() for path in records)):
        records[f"app.bsky.feed.post/{_filler_rkey(len(records))}"] = _filler(len(records))
    car, _, paths = build_repo(did, rev, records)
    parsed = read_car(car)
    items = [(path.encode(), cid_from_str(cid)) for path, cid in sorted(paths.items())]
    blocks = {cid: parsed.blocks[cid] for _, cid in items}
    data = tree(items, blocks)
    return *recommit(car, sign, data, blocks), paths


def _adjacent_pair_of_one_layer(keys: list[bytes]) -> bool:
    return any(_same_layer(a, b) for a, b in pairwise(keys))


def _two_layers(keys: list[bytes]) -> bool:
    return len({mst.key_layer(key) for key in keys}) >= 2


def _same_layer(a: bytes, b: bytes) -> bool:
    return mst.key_layer(a) == mst.key_layer(b)


def _filler_rkey(n: int) -> str:
    return encode_tid(int(BASE_TIME.timestamp() * 1_000_000) + n, 0)


def _filler(n: int) -> dict:
    return {
        "$type": "app.bsky.feed.post",
        "text": f"filler {n}",
        "createdAt": "2025-01-01T00:00:00.000Z",
        "langs": ["en"],
    }


def _common_prefix(a: bytes, b: bytes) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n

"""Fuzzing targets and mutators for the repo decoder, shared by tests/atproto/test_fuzz.py
(hypothesis, a few seconds) and benchmarks/fuzz.py (a long run that collects findings).

A target takes bytes (or values) and must either succeed or raise InvalidRepo: any other
exception escaping it is a finding. The mutators take a `random.Random`, so that a
hypothesis `randoms()` draws them (and shrinks them) as well as a plain seeded one.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Callable

import cbrrr
import orjson

from skyfill.atproto import mst
from skyfill.atproto.car import _encode_varint, read_car, write_car
from skyfill.atproto.cid import block_matches_cid, cid_for_block
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.repo import RepoRecords, build_repo, decode_repo

DID = "did:plc:abcdefghijklmnopqrstuvwx"
REV = "3kabcdefghijk"


# --- inputs ------------------------------------------------------------------------------


def sample_records(count: int, seed: int = 1) -> dict[str, dict]:
    """Records of a few collections, with links, bytes, nesting and dates."""
    rnd = random.Random(seed)
    link = cbrrr.CID(cid_for_block(b"an image"))
    records: dict[str, dict] = {}
    collections = ["app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"]
    for i in range(count):
        records[f"{rnd.choice(collections)}/3k{i:011d}"] = {
            "$type": "app.bsky.feed.post",
            "text": "x" * rnd.randrange(40),
            "n": rnd.randrange(-(2**40), 2**40),
            "embed": {"ref": link, "raw": rnd.randbytes(rnd.randrange(8))},
            "tags": [rnd.random() < 0.5, None, [1, 2]],
            "createdAt": "2025-03-04T05:06:07.123Z",
        }
    return records


def base_cars() -> list[bytes]:
    """Valid repository CARs to mutate: empty, one record, a tree of several layers."""
    return [
        build_repo(DID, REV, {})[0],
        build_repo(DID, REV, sample_records(1))[0],
        build_repo(DID, REV, sample_records(40))[0],
    ]


def repo_with_blocks(records: dict[str, bytes], did: str = DID) -> bytes:
    """A repository CAR whose record blocks are the given raw bytes (valid or not)."""
    blocks: dict[bytes, bytes] = {}
    items = []
    for path in sorted(records):
        cid = cid_for_block(records[path])
        blocks[cid] = records[path]
        items.append((path.encode(), cid))
    return repo_with_root(mst.build(items, blocks), blocks, did)


def repo_with_root(data_root: bytes, blocks: dict[bytes, bytes], did: str = DID) -> bytes:
    """A repository CAR of the given blocks whose commit names `data_root` as its MST."""
    commit = {"did": did, "version": 3, "data": cbrrr.CID(data_root), "rev": REV, "prev": None}
    commit["sig"] = b"\x00" * 64
    block = cbrrr.encode_dag_cbor(commit)
    cid = cid_for_block(block)
    return write_car([cid], [(cid, block), *blocks.items()])


# --- CAR mutators ------------------------------------------------------------------------


def car_sections(car: bytes) -> tuple[bytes, list[bytes]]:
    """A valid CAR as its header section and its block sections (each with its varint)."""
    sections = []
    pos = 0
    while pos < len(car):
        length, start = _read_varint(car, pos)
        sections.append(car[pos : start + length])
        pos = start + length
    return sections[0], sections[1:]


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _flip_bits(data: bytes, rnd: random.Random) -> bytes:
    out = bytearray(data)
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(out))
        out[i] ^= 1 << rnd.randrange(8)
    return bytes(out)


def _set_byte(data: bytes, rnd: random.Random) -> bytes:
    i = rnd.randrange(len(data))
    value = rnd.choice([0x00, 0x01, 0x7F, 0x80, 0xFF, 0x20, 0x12, 0x71, rnd.randrange(256)])
    return data[:i] + bytes([value]) + data[i + 1 :]


def _truncate(data: bytes, rnd: random.Random) -> bytes:
    return data[: rnd.randrange(len(data))]


def _insert(data: bytes, rnd: random.Random) -> bytes:
    i = rnd.randrange(len(data) + 1)
    return data[:i] + rnd.randbytes(rnd.randint(1, 8)) + data[i:]


def _delete(data: bytes, rnd: random.Random) -> bytes:
    i = rnd.randrange(len(data))
    return data[:i] + data[i + rnd.randint(1, 8) :]


def _swap_blocks(data: bytes, rnd: random.Random) -> bytes:
    header, blocks = car_sections(data)
    if len(blocks) >= 2:
        i, j = rnd.sample(range(len(blocks)), 2)
        blocks[i], blocks[j] = blocks[j], blocks[i]
    return header + b"".join(blocks)


def _duplicate_section(data: bytes, rnd: random.Random) -> bytes:
    header, blocks = car_sections(data)
    sections = [header, *blocks]
    copy = rnd.choice(sections)
    sections.insert(rnd.randrange(len(sections) + 1), copy)
    return b"".join(sections)


def _drop_block(data: bytes, rnd: random.Random) -> bytes:
    header, blocks = car_sections(data)
    if blocks:
        del blocks[rnd.randrange(len(blocks))]
    return header + b"".join(blocks)


def _corrupt_varint(data: bytes, rnd: random.Random) -> bytes:
    """Rewrite one section's length: off by a little, huge, zero, or over-long encoded."""
    header, blocks = car_sections(data)
    sections = [header, *blocks]
    i = rnd.randrange(len(sections))
    length, start = _read_varint(sections[i], 0)
    body = sections[i][start:]
    choice = rnd.randrange(4)
    if choice == 0:
        varint = _encode_varint(max(0, length + rnd.randint(-3, 3)))
    elif choice == 1:
        varint = _encode_varint(rnd.choice([0, 1, 2**31, 2**63 - 1, 2**64 + 5]))
    elif choice == 2:
        varint = bytes([0x80 | (length & 0x7F)]) + b"\x80" * rnd.randint(1, 10) + b"\x00"
    else:
        varint = b"\xff" * rnd.randint(1, 12)
    sections[i] = varint + body
    return b"".join(sections)


def _rehash_block(data: bytes, rnd: random.Random) -> bytes:
    """Mutate one block's bytes and store it under its new CID (the old one goes missing)."""
    header, blocks = car_sections(data)
    if not blocks:
        return data
    i = rnd.randrange(len(blocks))
    _length, start = _read_varint(blocks[i], 0)
    block = _flip_bits(blocks[i][start + 36 :] or b"\x00", rnd)
    cid = cid_for_block(block)
    blocks[i] = _encode_varint(len(cid) + len(block)) + cid + block
    return header + b"".join(blocks)


def _random_bytes(data: bytes, rnd: random.Random) -> bytes:
    return rnd.randbytes(rnd.randrange(64))


CAR_MUTATORS: list[Callable[[bytes, random.Random], bytes]] = [
    _flip_bits,
    _set_byte,
    _truncate,
    _insert,
    _delete,
    _swap_blocks,
    _duplicate_section,
    _drop_block,
    _corrupt_varint,
    _rehash_block,
]


def mutate_car(car: bytes, rnd: random.Random, rounds: int = 1) -> bytes:
    """`rounds` mutations in a row (structure-aware ones first, while the CAR still parses)."""
    for _ in range(rounds):
        if not car:
            return car
        mutator = rnd.choice(CAR_MUTATORS)
        try:
            car = mutator(car, rnd)
        except (IndexError, ValueError):  # the CAR no longer splits into sections
            car = _flip_bits(car, rnd)
    return car


# --- record blocks -----------------------------------------------------------------------


def mutate_block(block: bytes, rnd: random.Random) -> bytes:
    """One byte-level mutation of a DAG-CBOR block (not a CAR: no sections)."""
    if not block:
        return rnd.randbytes(rnd.randrange(16))
    mutator = rnd.choice([_flip_bits, _set_byte, _truncate, _insert, _delete])
    return mutator(block, rnd)


# --- MST nodes ---------------------------------------------------------------------------


def mst_blocks(nodes: list[dict]) -> tuple[dict[bytes, bytes], bytes]:
    """Encode nodes whose links are node indexes (`("node", j)`, j < i) or raw CIDs;
    returns the blocks and the CID of the last node, the root."""
    blocks: dict[bytes, bytes] = {}
    cids: list[bytes] = []

    def resolve(value: object) -> object:
        if isinstance(value, tuple) and value[:1] == ("node",):
            return cbrrr.CID(cids[value[1]]) if cids else None
        if isinstance(value, tuple) and value[:1] == ("cid",):
            return cbrrr.CID(value[1])
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        return value

    for node in nodes:
        block = cbrrr.encode_dag_cbor(resolve(node))
        cid = cid_for_block(block)
        blocks[cid] = block
        cids.append(cid)
    return blocks, cids[-1]


def getter(blocks: dict[bytes, bytes]) -> Callable[[bytes], bytes]:
    """A block getter as decode_repo's: missing or mismatched blocks raise InvalidRepo."""

    def get(cid: bytes) -> bytes:
        block = blocks.get(cid)
        if block is None or not block_matches_cid(cid, block):
            raise InvalidRepo("missing or mismatched block")
        return block

    return get


# --- targets: succeed or raise InvalidRepo -----------------------------------------------


def target_read_car(data: bytes) -> None:
    with contextlib.suppress(InvalidRepo):
        read_car(data)


def target_decode_repo(car: bytes) -> RepoRecords | None:
    try:
        repo = decode_repo(car, DID)
    except InvalidRepo:
        return None
    for text in repo.records:
        assert isinstance(orjson.loads(text), dict), "a record row that is not a JSON object"
    return repo


def target_walk(blocks: dict[bytes, bytes], root: bytes) -> None:
    try:
        keys = [key for key, _ in mst.walk(getter(blocks), root)]
    except InvalidRepo:
        return
    assert keys == sorted(set(keys)), "walk yielded keys out of order"


# --- MST trees as index-linked nodes -----------------------------------------------------


def index_nodes(blocks: dict[bytes, bytes], root: bytes) -> list[dict]:
    """A built MST as nodes in post-order whose links to nodes are `("node", j)`;
    value CIDs stay raw CIDs (`("cid", cid)`). The inverse of `mst_blocks`."""
    nodes: list[dict] = []
    index: dict[bytes, int] = {}

    def link(cid: object) -> object:
        if cid is None:
            return None
        raw = bytes(cid) if isinstance(cid, cbrrr.CID) else cid
        assert isinstance(raw, bytes)
        if raw not in index:
            visit(raw)
        return ("node", index[raw])

    def visit(cid: bytes) -> None:
        node = cbrrr.decode_dag_cbor(blocks[cid])
        assert isinstance(node, dict)
        left = link(node["l"])
        entries = []
        for entry in node["e"]:
            subtree = link(entry["t"])
            value = ("cid", bytes(entry["v"]))
            entries.append({"p": entry["p"], "k": entry["k"], "v": value, "t": subtree})
        index[cid] = len(nodes)
        nodes.append({"l": left, "e": entries})

    visit(root)
    return nodes


def keys_at_layer(layer: int, count: int, collection: str = "com.example.a") -> list[bytes]:
    """`count` repo paths whose MST layer is `layer`, in order."""
    found = []
    i = 0
    while len(found) < count:
        key = f"{collection}/{i:08d}".encode()
        if mst.key_layer(key) == layer:
            found.append(key)
        i += 1
    return found


# --- the same inputs from a plain Random (benchmarks/fuzz.py) ------------------------------


def random_junk(rnd: random.Random) -> object:
    """A value of any DAG-CBOR type, where a field expects another."""
    kind = rnd.randrange(8)
    if kind == 0:
        return None
    if kind == 1:
        return rnd.random() < 0.5
    if kind == 2:
        return rnd.choice([-1, 0, 1, 2**31, 2**63, -(2**63) - 1, rnd.randint(-(2**64), 2**64 - 1)])
    if kind == 3:
        return rnd.choice([0.5, -1.0, 1e300])
    if kind == 4:
        return rnd.choice(["", "a", "1", "\u00e9"])
    if kind == 5:
        return rnd.randbytes(rnd.randrange(40))
    if kind == 6:
        return [rnd.randrange(4) for _ in range(rnd.randrange(3))]
    return {"a": rnd.randrange(4)}


def random_value(rnd: random.Random, depth: int = 0) -> object:
    """A random DAG-CBOR value (maps, lists, links, bytes, text, integers, floats)."""
    kind = rnd.randrange(10 if depth < 4 else 8)
    if kind == 0:
        return cbrrr.CID(cid_for_block(b"a record"))
    if kind < 8:
        return random_junk(rnd)
    if kind == 8:
        return [random_value(rnd, depth + 1) for _ in range(rnd.randrange(4))]
    return {
        rnd.choice(["a", "$type", "$link", "$bytes", "text", "createdAt"]): random_value(
            rnd, depth + 1
        )
        for _ in range(rnd.randrange(4))
    }


_RANDOM_KEYS = [b"a/b", b"app.bsky.feed.post/", b"com.example.a/00000000", b"/", b""]


def random_nodes(rnd: random.Random) -> list[dict]:
    """Up to 5 random MST-ish nodes, each linking (if at all) to nodes before it."""
    nodes: list[dict] = []
    for i in range(rnd.randint(1, 5)):

        def link(i: int = i) -> object:
            choice = rnd.randrange(4)
            if choice == 0 and i:
                return ("node", rnd.randrange(i))
            if choice == 1:
                return ("cid", cid_for_block(b"a record"))
            return None if choice == 2 else random_junk(rnd)

        entries = []
        for _ in range(rnd.randrange(5)):
            entry: dict = {
                "p": rnd.randrange(30) if rnd.random() < 0.8 else random_junk(rnd),
                "k": rnd.choice([*_RANDOM_KEYS, rnd.randbytes(rnd.randrange(24))]),
                "v": ("cid", cid_for_block(b"a record")) if rnd.random() < 0.8 else link(),
                "t": link(),
            }
            for field in ("p", "k", "v", "t"):
                if rnd.random() < 0.05:
                    del entry[field]
            entries.append(entry)
        node: dict = {"l": link(), "e": entries if rnd.random() < 0.95 else random_junk(rnd)}
        nodes.append(node)
    return nodes


def mutate_nodes(tree: list[dict], rnd: random.Random) -> list[dict]:
    """A valid tree (from `index_nodes`) with 1-3 changes: a field, a link, an entry."""
    nodes = [dict(node, e=[dict(entry) for entry in node["e"]]) for node in tree]
    for _ in range(rnd.randint(1, 3)):
        i = rnd.randrange(len(nodes))
        node = nodes[i]
        below = ("node", rnd.randrange(i)) if i else None
        what = rnd.randrange(4)
        if what == 0:
            node["l"] = below if rnd.random() < 0.5 else random_junk(rnd)
        elif not node["e"]:
            continue
        elif what == 1:
            del node["e"][rnd.randrange(len(node["e"]))]
        elif what == 2:
            node["e"].insert(rnd.randrange(len(node["e"]) + 1), dict(rnd.choice(node["e"])))
        else:
            entry = rnd.choice(node["e"])
            field = rnd.choice(["p", "k", "v", "t"])
            entry[field] = rnd.choice([below, rnd.choice(_RANDOM_KEYS), random_junk(rnd)])
    return nodes

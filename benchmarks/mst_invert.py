"""MST inversion benchmark: µs per `invert_ops` on the slice a host sends (sync 1.1).

Builds a tree of `--keys` records (paths `app.bsky.feed.post/<tid-like rkey>`), then for
each commit shape (one create, one update, one delete, and a `--batch`-op mix) builds the
new tree, cuts the slice (`diff_blocks ∪ proof_blocks`, as a simulated PDS would) and
times `invert_ops` on it through a dict getter, checking every result against the old
root. Prints the median µs per inversion and the slice's node count.

    .venv/bin/python benchmarks/mst_invert.py --keys 10000 --repeat 2000
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
from dataclasses import dataclass

from skyfill.atproto import mst
from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.mst_edit import diff_blocks, invert_ops, proof_blocks


@dataclass(frozen=True, slots=True)
class Op:
    action: str
    path: str
    cid: bytes | None
    prev: bytes | None


def _value(i: int) -> bytes:
    return cid_for_block(f"record {i}".encode())


def _path(rnd: random.Random) -> str:
    return f"app.bsky.feed.post/3k{rnd.getrandbits(60):015x}"


def _commit(rnd: random.Random, before: dict[str, bytes], shape: str, batch: int) -> list[Op]:
    paths = rnd.sample(sorted(before), batch)
    if shape == "create":
        return [Op("create", _path(rnd), _value(-1), None)]
    if shape == "update":
        return [Op("update", paths[0], _value(-1), before[paths[0]])]
    if shape == "delete":
        return [Op("delete", paths[0], None, before[paths[0]])]
    ops = [Op("create", _path(rnd), _value(-i - 1), None) for i in range(batch // 3)]
    ops += [
        Op("update", p, _value(-1000 - i), before[p]) for i, p in enumerate(paths[: batch // 3])
    ]
    ops += [Op("delete", p, None, before[p]) for p in paths[batch // 3 : batch - batch // 3]]
    return ops


def _after(before: dict[str, bytes], ops: list[Op]) -> dict[str, bytes]:
    after = dict(before)
    for op in ops:
        if op.action == "delete":
            del after[op.path]
        else:
            assert op.cid is not None
            after[op.path] = op.cid
    return after


def _time(shape: str, before: dict[str, bytes], args: argparse.Namespace) -> None:
    rnd = random.Random(1)
    blocks: dict[bytes, bytes] = {}
    old = mst.build(sorted((p.encode(), v) for p, v in before.items()), blocks)
    ops = _commit(rnd, before, shape, args.batch)
    after = _after(before, ops)
    new = mst.build(sorted((p.encode(), v) for p, v in after.items()), blocks)
    get = blocks.__getitem__
    cut = diff_blocks(old, new, get) | proof_blocks(new, get, ops)
    slice_ = {cid: blocks[cid] for cid in cut}
    samples = []
    for _ in range(args.repeat):
        start = time.perf_counter_ns()
        root = invert_ops(new, slice_.__getitem__, ops)
        samples.append(time.perf_counter_ns() - start)
        assert root == old
    median = statistics.median(samples) / 1000
    print(f"{shape:>7} ops={len(ops):<4} slice={len(slice_):<4} nodes  {median:8.1f} µs/inversion")


def main() -> None:
    parser = argparse.ArgumentParser(description="MST inversion benchmark")
    parser.add_argument("--keys", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=200, help="ops of the mixed commit")
    args = parser.parse_args()
    rnd = random.Random(0)
    before = {_path(rnd): _value(i) for i in range(args.keys)}
    print(f"tree of {len(before)} keys")
    for shape in ("create", "update", "delete", "mixed"):
        _time(shape, before, args)


if __name__ == "__main__":
    main()

"""Fuzz benchmark: the repo decoder against random and mutated inputs, for minutes.

The same targets and mutators as tests/atproto/test_fuzz.py (tests/atproto/fuzzing.py),
driven by a seeded `random.Random` instead of hypothesis, so that a long run counts every
execution and goes on after a finding. A target must return or raise InvalidRepo; any
other exception, or an execution longer than `--hang` seconds, is a finding.

Targets (each gets an equal share of the time):
  car-bytes       random bytes, and a valid CAR header + random bytes -> read_car, decode_repo
  car-mutated     a valid repo CAR (0, 1, 40 records) after 1-4 mutations (bit flips, bytes
                  set, truncation, insertion, deletion, blocks swapped/duplicated/dropped,
                  a section length varint corrupted, a block changed under its new CID)
                  -> decode_repo
  mst-random      up to 5 random MST-ish nodes (fields of any type, links between them)
                  -> mst.collect (every block present and matching its CID)
  mst-mutated     a valid 60-key MST with 1-3 changes (a field, a link, an entry dropped or
                  repeated) -> mst.collect
  record-bytes    random bytes, or a valid record block after a byte-level mutation, as the
                  one record of a repo -> decode_repo
  record-value    a random DAG-CBOR value (or one nested up to 400 deep), encoded, as the
                  one record of a repo -> decode_repo

Reported per target: executions, executions/s, slowest execution, how the inputs were
refused (InvalidRepo kinds: how deep they got), and findings: unique (exception class,
message) pairs, each with its first input saved to `--out` (a CAR for car-* and record-*
targets; for mst-* a CAR whose root is the MST root), which `--replay FILE` runs again.
Exit status 1 when there is a finding.

    .venv/bin/python -m benchmarks.fuzz --seconds 300
    .venv/bin/python -m benchmarks.fuzz --replay test-output/fuzz/mst-random-1.car

The hypothesis tests themselves run long with their `long` profile (20000 examples each,
shrinking a failure to a minimal input):

    SKYFILL_HYPOTHESIS_PROFILE=long .venv/bin/pytest tests/atproto/test_fuzz.py
"""

from __future__ import annotations

import argparse
import collections
import json
import random
import re
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cbrrr
import orjson
from tests.atproto.fuzzing import (
    DID,
    base_cars,
    car_sections,
    getter,
    index_nodes,
    mst_blocks,
    mutate_block,
    mutate_car,
    mutate_nodes,
    random_nodes,
    random_value,
    repo_with_blocks,
    sample_records,
)

from skyfill.atproto import mst
from skyfill.atproto.car import read_car, write_car
from skyfill.atproto.cid import cid_for_block
from skyfill.atproto.exceptions import InvalidRepo
from skyfill.atproto.repo import decode_repo

CHUNK = 50
"""Executions of one target in a row before the scheduler looks at the time shares."""


class Hang(Exception):
    """An execution outlasted --hang seconds (raised by the interval timer)."""


@dataclass(slots=True)
class Target:
    name: str
    make: Callable[[random.Random], object]
    """Draws one input."""
    run: Callable[[object], None]
    """Runs it: returns, or raises InvalidRepo, or (a finding) anything else."""
    save: Callable[[object], bytes]
    """The input as a file that replays it."""
    executions: int = 0
    seconds: float = 0.0
    """Time in `run` (executions/s is of this)."""
    share: float = 0.0
    """Time in `make` and `run`: the scheduler evens this out between targets."""
    slowest: float = 0.0
    refused: collections.Counter[str] = field(default_factory=collections.Counter)
    findings: dict[tuple[str, str], dict] = field(default_factory=dict)


def _decode(car: object) -> None:
    assert isinstance(car, bytes)
    repo = decode_repo(car, DID)
    for text in repo.records:
        if not isinstance(orjson.loads(text), dict):
            raise AssertionError("a record row that is not a JSON object")


def _walk(value: object) -> None:
    assert isinstance(value, tuple)
    blocks, root = value
    keys, _values = mst.collect(getter(blocks), root)
    if keys != sorted(set(keys)):
        raise AssertionError("collect returned keys out of order")


def _as_car(value: object) -> bytes:
    if isinstance(value, bytes):
        return value
    assert isinstance(value, tuple)
    blocks, root = value
    return write_car([root], blocks.items())


def targets() -> list[Target]:
    cars = base_cars()
    headers = [car_sections(car)[0] for car in cars]
    tree_blocks: dict[bytes, bytes] = {}
    value = cid_for_block(b"a record")
    tree_items = sorted((path.encode(), value) for path in sample_records(60))
    tree = index_nodes(tree_blocks, mst.build(tree_items, tree_blocks))
    record_blocks = [cbrrr.encode_dag_cbor(value) for value in sample_records(20).values()]

    def car_bytes(rnd: random.Random) -> bytes:
        tail = rnd.randbytes(rnd.randrange(400))
        return rnd.choice(headers) + tail if rnd.random() < 0.5 else tail

    def read_and_decode(car: object) -> None:
        assert isinstance(car, bytes)
        read_car(car)
        _decode(car)

    def record_bytes(rnd: random.Random) -> bytes:
        if rnd.random() < 0.3:
            block = rnd.randbytes(rnd.randrange(200))
        else:
            block = mutate_block(rnd.choice(record_blocks), rnd)
        return repo_with_blocks({"app.bsky.feed.post/3kabcdefghijk": block})

    def record_value(rnd: random.Random) -> bytes:
        if rnd.random() < 0.1:
            depth = rnd.randrange(400)
            block = b"\xa1\x61a" + rnd.choice([b"\x81", b"\xa1\x61a"]) * depth + b"\x00"
        else:
            block = cbrrr.encode_dag_cbor(random_value(rnd))
        return repo_with_blocks({"app.bsky.feed.post/3kabcdefghijk": block})

    return [
        Target("car-bytes", car_bytes, read_and_decode, _as_car),
        Target(
            "car-mutated",
            lambda rnd: mutate_car(rnd.choice(cars), rnd, rnd.randint(1, 4)),
            _decode,
            _as_car,
        ),
        Target("mst-random", lambda rnd: mst_blocks(random_nodes(rnd)), _walk, _as_car),
        Target("mst-mutated", lambda rnd: mst_blocks(mutate_nodes(tree, rnd)), _walk, _as_car),
        Target("record-bytes", record_bytes, _decode, _as_car),
        Target("record-value", record_value, _decode, _as_car),
    ]


def _signature(exc: BaseException) -> tuple[str, str]:
    """A finding's identity: its class and its message without numbers, offsets or bytes."""
    message = re.sub(r"b'.*?'|b\".*?\"|0x[0-9a-f]+|\d+", "#", str(exc))[:120]
    return type(exc).__name__, message


def _on_alarm(_signum: int, _frame: object) -> None:
    raise Hang("execution outlasted the --hang limit")


def fuzz(args: argparse.Namespace) -> list[Target]:
    rnd = random.Random(args.seed)
    chosen = [t for t in targets() if not args.target or t.name in args.target]
    args.out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGALRM, _on_alarm)
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        target = min(chosen, key=lambda t: t.share)
        chunk_started = time.perf_counter()
        for _ in range(CHUNK):
            value = target.make(rnd)
            started = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, args.hang)
            try:
                target.run(value)
            except InvalidRepo as exc:
                target.refused[str(exc.kind)] += 1
            except (Exception, RecursionError) as exc:
                _record(args.out, target, exc, value)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            elapsed = time.perf_counter() - started
            target.executions += 1
            target.seconds += elapsed
            target.slowest = max(target.slowest, elapsed)
        target.share += time.perf_counter() - chunk_started
    return chosen


def _record(out: Path, target: Target, exc: BaseException, value: object) -> None:
    key = _signature(exc)
    finding = target.findings.get(key)
    if finding is not None:
        finding["count"] += 1
        return
    path = out / f"{target.name}-{len(target.findings) + 1}.car"
    path.write_bytes(target.save(value))
    target.findings[key] = {"count": 1, "message": str(exc)[:300], "reproducer": str(path)}


def report(chosen: list[Target], args: argparse.Namespace, wall: float) -> int:
    total = sum(t.executions for t in chosen)
    print(f"fuzz: seed {args.seed}, {wall:.0f} s, {total} executions, {total / wall:.0f}/s")
    header = (
        f"{'target':<14} {'execs':>9} {'execs/s':>9} {'slowest':>9}  refused (InvalidRepo kinds)"
    )
    print(header)
    print("-" * len(header))
    for t in chosen:
        rate = t.executions / t.seconds if t.seconds else 0.0
        kinds = ", ".join(f"{k} {n}" for k, n in t.refused.most_common())
        accepted = t.executions - t.refused.total() - sum(f["count"] for f in t.findings.values())
        print(
            f"{t.name:<14} {t.executions:>9} {rate:>9.0f} {t.slowest * 1000:>7.1f}ms"
            f"  accepted {accepted}; {kinds}"
        )
    findings = [(t.name, key, f) for t in chosen for key, f in t.findings.items()]
    print(f"\nfindings: {len(findings)}")
    for name, (cls, _), finding in findings:
        print(f"  {name}: {cls} x{finding['count']}: {finding['message'][:160]}")
        print(f"    reproducer: {finding['reproducer']}")
    summary = {
        t.name: {
            "executions": t.executions,
            "seconds": round(t.seconds, 3),
            "refused": dict(t.refused),
            "findings": [{"class": key[0], **f} for key, f in t.findings.items()],
        }
        for t in chosen
    }
    (args.out / "summary.json").write_text(json.dumps(summary, indent=2))
    return 1 if findings else 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.fuzz",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--seconds", type=float, default=60.0, help="how long to fuzz, in all")
    p.add_argument("--seed", type=int, default=1, help="seed of the input generator")
    p.add_argument("--hang", type=float, default=2.0, help="an execution longer is a finding")
    p.add_argument("--target", action="append", default=[], help="only this target (repeatable)")
    p.add_argument("--replay", type=Path, default=None, help="run one saved reproducer again")
    p.add_argument(
        "--out",
        type=Path,
        default=Path("test-output/fuzz"),
        help="where the reproducers and summary.json go",
    )
    return p.parse_args(argv)


def replay(path: Path) -> None:
    """Run a saved input through the target its name begins with; raises what it raises."""
    data = path.read_bytes()
    if path.name.startswith("mst-"):
        car = read_car(data)
        _walk((car.blocks, car.roots[0]))
    else:
        _decode(data)
    print(f"{path}: no finding (returned, or raised InvalidRepo)")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.replay is not None:
        try:
            replay(args.replay)
        except InvalidRepo as exc:
            print(f"{args.replay}: refused: {exc}")
        return
    started = time.perf_counter()
    chosen = fuzz(args)
    sys.exit(report(chosen, args, time.perf_counter() - started))


if __name__ == "__main__":
    main()

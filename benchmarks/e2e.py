"""End-to-end benchmark: `skyfill run` against the simulated network, and a naive baseline.

Starts `python -m skyfill.simnet` (PLC + PDS hosts on loopback, in its own process), then
for each configuration runs, as a subprocess,

    skyfill run --dids DIDS --plc-url PLC --allow-private-network --workdir TMP \\
        --progress none --job-id ID --concurrency C --decode-processes P

and times it from process start to exit (planning, fetching, verifying, decoding, durable
segments, task files, aggregation into the final dataset). Records are counted from the
output dataset (TMP/jobs/ID/output/records, hive-partitioned Parquet) and repos from
output/repos.parquet, and checked against the simulated network's truth file.

The baseline, run in this process: for each DID in turn, GET its PLC document and then its
repo (`com.atproto.sync.getRepo`) with aiohttp, and decode the CAR with libipld.decode_car.
It verifies nothing, walks no MST, writes nothing; records = decoded blocks with a `$type`.
Both talk to the same simnet in the same run; the baseline does far less work, so the
skyfill/baseline ratio shows the cost of verification, output and durability.

The simnet is stopped by PID (SIGTERM) at the end. Traffic goes to localhost only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import libipld
import psutil
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
DEFAULT_CONFIGS = "2:32,0:32,2:8,0:8"


@dataclass(slots=True)
class Network:
    pid: int
    plc: str
    pds: list[str]
    dids_path: Path
    truth: dict
    started_seconds: float

    @property
    def dids(self) -> list[str]:
        return [line for line in self.dids_path.read_text().splitlines() if line.strip()]

    @property
    def truth_records(self) -> int:
        return sum(len(r["records"]) for r in self.truth["repos"].values())


@dataclass(slots=True)
class Run:
    label: str
    seconds: float
    cpu_seconds: float
    dids: int
    ok: int
    records: int
    car_bytes: int
    note: str = ""


@dataclass(slots=True)
class Series:
    label: str
    processes: int = 0
    runs: list[Run] = field(default_factory=list)

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.seconds)

    @property
    def median_seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)


def _check_local(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"refusing non-local URL {url!r}")


# -- the simulated network -------------------------------------------------------------------


@contextlib.contextmanager
def simnet(
    python: str, accounts: int, hosts: int, mean_records: int, seed: int, out: Path
) -> Iterator[Network]:
    cmd = [
        python,
        "-m",
        "skyfill.simnet",
        "--accounts",
        str(accounts),
        "--hosts",
        str(hosts),
        "--mean-records",
        str(mean_records),
        "--seed",
        str(seed),
        "--out",
        str(out),
    ]
    started = time.perf_counter()
    log_path = out.with_suffix(".log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"simnet exited early:\n{log_path.read_text()}")
        ready = json.loads(line)
        for url in [ready["plc"], *ready["pds"]]:
            _check_local(url)
        truth = json.loads(Path(ready["truth"]).read_text())
        yield Network(
            pid=proc.pid,
            plc=ready["plc"],
            pds=ready["pds"],
            dids_path=Path(ready["dids"]),
            truth=truth,
            started_seconds=time.perf_counter() - started,
        )
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


# -- skyfill ---------------------------------------------------------------------------------


def _run_sampling_cpu(cmd: list[str], log: Path) -> tuple[int, float]:
    """Run `cmd` (output to `log`); return its exit code and its process tree's CPU seconds.

    The tree (skyfill, its forkserver and decode workers) is sampled every 50 ms with psutil
    (user+sys); each process counts with its last sample, so up to ~50 ms each may be missed.
    """
    cpu: dict[int, float] = {}
    with open(log, "wb") as out:
        proc = psutil.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                with contextlib.suppress(psutil.Error):
                    tree = [proc, *proc.children(recursive=True)]
                    for p in tree:
                        with contextlib.suppress(psutil.Error):
                            t = p.cpu_times()
                            cpu[p.pid] = t.user + t.system
                time.sleep(0.05)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return proc.returncode, sum(cpu.values())


def run_skyfill(
    skyfill: list[str],
    net: Network,
    dids: list[str],
    workdir: Path,
    job_id: str,
    processes: int,
    concurrency: int,
) -> Run:
    dids_path = workdir / f"{job_id}.dids"
    dids_path.parent.mkdir(parents=True, exist_ok=True)
    dids_path.write_text("".join(f"{d}\n" for d in dids))
    expected = sum(len(net.truth["repos"][d]["records"]) for d in dids)
    cmd = [
        *skyfill,
        "run",
        "--dids",
        str(dids_path),
        "--plc-url",
        net.plc,
        "--allow-private-network",
        "--workdir",
        str(workdir),
        "--progress",
        "none",
        "--job-id",
        job_id,
        "--concurrency",
        str(concurrency),
        "--decode-processes",
        str(processes),
    ]
    log = workdir / f"{job_id}.log"
    started = time.perf_counter()
    returncode, cpu = _run_sampling_cpu(cmd, log)
    seconds = time.perf_counter() - started
    if returncode != 0:
        raise SystemExit(f"skyfill exited {returncode}: {' '.join(cmd)}\n{log.read_text()}")
    output = workdir / "jobs" / job_id / "output"
    records = ds.dataset(output / "records", format="parquet", partitioning="hive").count_rows()
    repos = pq.read_table(output / "repos.parquet", columns=["status", "car_bytes"])
    ok = int(pc.sum(pc.equal(repos["status"], "ok")).as_py() or 0)
    car_bytes = int(pc.sum(repos["car_bytes"]).as_py() or 0)
    note = "" if records == expected else f"records != truth ({expected})"
    return Run(
        label=f"skyfill P={processes} C={concurrency}",
        seconds=seconds,
        cpu_seconds=cpu,
        dids=repos.num_rows,
        ok=ok,
        records=records,
        car_bytes=car_bytes,
        note=note,
    )


# -- naive baseline --------------------------------------------------------------------------


async def _baseline(net: Network) -> Run:
    dids = net.dids
    ok = records = car_bytes = 0
    cpu_before = time.process_time()
    started = time.perf_counter()
    async with aiohttp.ClientSession() as session:
        for did in dids:
            async with session.get(f"{net.plc}/{did}") as resp:
                if resp.status != 200:
                    continue
                doc = await resp.json()
            pds = next(
                s["serviceEndpoint"] for s in doc["service"] if s["id"].endswith("#atproto_pds")
            )
            _check_local(pds)
            url = f"{pds}/xrpc/com.atproto.sync.getRepo"
            async with session.get(url, params={"did": did}) as resp:
                if resp.status != 200:
                    continue
                car = await resp.read()
            _header, blocks = libipld.decode_car(car)
            ok += 1
            car_bytes += len(car)
            records += sum(1 for b in blocks.values() if isinstance(b, dict) and "$type" in b)
    seconds = time.perf_counter() - started
    return Run(
        label="baseline (sequential GET + libipld.decode_car)",
        seconds=seconds,
        cpu_seconds=time.process_time() - cpu_before,
        dids=len(dids),
        ok=ok,
        records=records,
        car_bytes=car_bytes,
        note="no verification, no MST walk, no output",
    )


def run_baseline(net: Network) -> Run:
    return asyncio.run(_baseline(net))


# -- report --------------------------------------------------------------------------------


def _marginal(run: Run, fixed: Run | None) -> str:
    """DIDs/s and records/s beyond the fixed cost (start-up, pool, aggregation)."""
    if fixed is None or run.seconds <= fixed.seconds or run.dids <= fixed.dids:
        return f"{'-':>8} {'-':>8}"
    extra = run.seconds - fixed.seconds
    return f"{(run.dids - fixed.dids) / extra:>8.0f} {(run.records - fixed.records) / extra:>8.0f}"


def print_table(
    series: list[Series], fixed: dict[int, Series], baseline: Series | None, net: Network
) -> None:
    header = (
        f"{'configuration':<47} {'runs':>4} {'best s':>7} {'med s':>7} {'DIDs':>5} {'ok':>5} "
        f"{'records':>8} {'CAR MB':>6} {'DIDs/s':>7} {'rec/s':>7} {'MB/s':>5} {'cpu s':>5} "
        f"{'x base':>6} {'>fixed':>8} {'>fixed':>8}  note"
    )
    units = f"{'':<{len(header) - 24}}{'DIDs/s':>8} {'rec/s':>8}"
    print(
        f"\ne2e benchmark: {len(net.dids)} DIDs, {len(net.pds)} PDS hosts, "
        f"{net.truth_records} records in the truth file; {os.cpu_count()} cpus; "
        f"load average {_load()}; times wall-clock, rates from the best run"
    )
    print(header)
    print(units)
    print("-" * len(header))
    base_rate = baseline.best.dids / baseline.best.seconds if baseline else None
    rows = [(s, None) for s in fixed.values()]
    rows += [(s, fixed.get(s.processes)) for s in series]
    rows += [(baseline, None)] if baseline else []
    for s, f in rows:
        r = s.best
        rate = r.dids / r.seconds
        ratio = f"{rate / base_rate:>6.2f}" if base_rate else f"{'-':>6}"
        print(
            f"{s.label:<47} {len(s.runs):>4} {r.seconds:>7.2f} {s.median_seconds:>7.2f} "
            f"{r.dids:>5} {r.ok:>5} {r.records:>8} {r.car_bytes / 1e6:>6.1f} {rate:>7.1f} "
            f"{r.records / r.seconds:>7.0f} {r.car_bytes / 1e6 / r.seconds:>5.1f} "
            f"{r.cpu_seconds:>5.1f} {ratio} {_marginal(r, f.best if f else None)}  {r.note}"
        )


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def parse_configs(text: str) -> list[tuple[int, int]]:
    configs = []
    for part in text.split(","):
        processes, _, concurrency = part.partition(":")
        configs.append((int(processes), int(concurrency)))
    return configs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/e2e.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--accounts", type=int, default=1000, help="simnet accounts")
    p.add_argument("--hosts", type=int, default=3, help="simnet PDS hosts")
    p.add_argument("--mean-records", type=int, default=60, help="simnet typical records")
    p.add_argument("--seed", type=int, default=7, help="simnet seed")
    p.add_argument(
        "--configs",
        default=DEFAULT_CONFIGS,
        help="comma list of DECODE_PROCESSES:CONCURRENCY (default %(default)s)",
    )
    p.add_argument("--repeats", type=int, default=3, help="runs per configuration")
    p.add_argument(
        "--fixed-dids",
        type=int,
        default=10,
        help="DIDs of the fixed-cost runs, one per decode-processes value (0: none)",
    )
    p.add_argument("--no-baseline", action="store_true", help="skip the naive baseline")
    p.add_argument(
        "--skyfill",
        default=None,
        help="skyfill command (default: the skyfill next to this python, else python -m skyfill)",
    )
    return p.parse_args(argv)


def _skyfill_command(arg: str | None) -> list[str]:
    if arg:
        return arg.split()
    script = Path(sys.executable).with_name("skyfill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "skyfill"]


def run_all(args: argparse.Namespace, net: Network, work: Path) -> None:
    skyfill = _skyfill_command(args.skyfill)
    configs = parse_configs(args.configs)
    dids = net.dids
    series = [Series(f"skyfill run P={p} C={c}", processes=p) for p, c in configs]
    fixed: dict[int, Series] = {}
    if args.fixed_dids:
        for p, _ in configs:
            label = f"skyfill run P={p} C=32, {args.fixed_dids} DIDs (fixed cost)"
            fixed.setdefault(p, Series(label, processes=p))
    baseline = None if args.no_baseline else Series("baseline")
    runs = 0
    for repeat in range(args.repeats):
        # Alternate the configurations run by run, so drift hits all of them alike.
        jobs = [(s, p, 32, dids[: args.fixed_dids]) for p, s in fixed.items()]
        jobs += [(s, p, c, dids) for s, (p, c) in zip(series, configs, strict=True)]
        for s, processes, concurrency, subset in jobs:
            runs += 1
            job_id = f"bench-{runs}"
            run = run_skyfill(skyfill, net, subset, work, job_id, processes, concurrency)
            print(f"[{repeat + 1}/{args.repeats}] {s.label}: {run.seconds:.2f}s", file=sys.stderr)
            s.runs.append(run)
            shutil.rmtree(work / "jobs" / job_id, ignore_errors=True)
        if baseline is not None:
            run = run_baseline(net)
            print(f"[{repeat + 1}/{args.repeats}] baseline: {run.seconds:.2f}s", file=sys.stderr)
            baseline.label = run.label
            baseline.runs.append(run)
    print_table(series, fixed, baseline, net)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="skyfill-bench-e2e-"))
    try:
        with simnet(
            sys.executable, args.accounts, args.hosts, args.mean_records, args.seed, tmp / "net"
        ) as net:
            print(
                f"simnet up (pid {net.pid}) in {net.started_seconds:.1f}s: "
                f"{len(net.dids)} DIDs, {net.truth_records} records",
                file=sys.stderr,
            )
            run_all(args, net, tmp / "work")
        print(
            "\nP = --decode-processes, C = --concurrency; cpu s = user+sys CPU of the process "
            "(skyfill: with its forkserver and decode workers; not the simnet's);\n"
            "x base = DIDs/s over the baseline's; >fixed = rates beyond the fixed-cost run of "
            "the same P: (DIDs - fixed DIDs) / (seconds - fixed seconds)"
        )
        print(f"total wall time {time.perf_counter() - started:.0f}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

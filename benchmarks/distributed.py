"""Distributed-mode benchmark: one Redis, one simulated network, 1..N `skyfill worker`s.

Starts one `redis-server` (127.0.0.1, a free port, `--save '' --appendonly no`) and one
`python -m skyfill.simnet` (PLC + PDS hosts on loopback), each in its own process and each
stopped by PID (SIGTERM) at the end. Then, for each worker count W (`--workers`), a fresh job:

    skyfill submit --state REDIS --dids DIDS --workdir TMP --job-id ID --plc-url PLC \\
        --allow-private-network --batch-size 50 [FLAGS]
    skyfill worker --state REDIS --job ID --worker-id wK --progress none     (K = 1..W)

The W workers are started together; the run is timed from just before the first worker is
started until the last one has exited (claiming batches, resolving, fetching, verifying,
decoding, task files, and the aggregation that one worker runs at the end). `skyfill submit`
(planning into Redis) is timed apart. Redis is emptied (FLUSHDB) before every job: skyfill's
host budgets live in Redis keyed by host and are shared by every job on the server, so without
it a job would start with the PLC budget the previous job spent (3000/5m by default).

Per run: `skyfill status ID --state REDIS --json` must say status "completed" and pending 0
(checked; a run that fails the check is marked in the table); the "workers" list gives each
worker's tasks_done (the share of batches it took). Records are counted in the output dataset
(TMP/jobs/ID/output/records, hive-partitioned Parquet, with pyarrow.dataset) and compared with
the simnet's truth file. CPU: user+sys seconds of the workers (with their decode processes;
getrusage(RUSAGE_CHILDREN) across the run), and of the simnet and redis-server (psutil), all
on the same machine: with 2 cores the simnet competes with the workers, so speed-up flattens
once the cores are busy. The 1-minute load average is printed at the end of each run.

Scenarios:
throughput  all DIDs of the network, skyfill's default rate limit (3000/5m per host).
limited     the first `--limited-dids` DIDs, with every PDS host held to `--limited-rate`
            (default 20/1s) by `--rate-limit RATE` on submit, which the workers share through
            Redis; the PLC keeps the default 3000/5m (`--hosts PLC=3000/5m`), so that the PDS
            budgets, not the PLC, are the bound. The simnet itself enforces no limit: what
            is measured is what skyfill sends. From `GET <pds>/_simnet/arrivals` (epoch time
            of every getRepo arrival per host), filtered to the run's span: per host the
            achieved rate ((n - 1) / (last - first)) and the most requests in any sliding
            window of the rate's length, against the budget.

Only localhost is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow.dataset as ds
import redis

from skyfill.ratelimit.spec import RateSpec, parse_rate

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SCENARIOS = ("throughput", "limited")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _check_local(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"refusing non-local URL {url!r}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        t = psutil.Process(pid).cpu_times()
        return t.user + t.system
    return 0.0


# -- redis-server ----------------------------------------------------------------------------


@dataclass(slots=True)
class Redis:
    pid: int
    url: str


@contextlib.contextmanager
def redis_server(directory: Path) -> Iterator[Redis]:
    """`redis-server` on 127.0.0.1 and a free port, no persistence; stopped by PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed")
    directory.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", ""]
    cmd += ["--appendonly", "no", "--dir", str(directory)]
    with open(directory / "redis.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"redis-server exited {proc.returncode}")
            with contextlib.suppress(OSError):
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        break
            if time.monotonic() > deadline:
                raise SystemExit(f"redis-server not ready on port {port}")
            time.sleep(0.05)
        _log(f"redis-server up (pid {proc.pid}) on port {port}")
        yield Redis(proc.pid, f"redis://127.0.0.1:{port}/0")
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


# -- the simulated network -------------------------------------------------------------------


@dataclass(slots=True)
class Network:
    pid: int
    plc: str
    pds: list[str]
    dids: list[str]
    truth: dict

    def records(self, dids: list[str]) -> int:
        counts = (self.truth["repos"][d]["records"] for d in dids)
        return sum(c if isinstance(c, int) else len(c) for c in counts)

    def host_of(self, did: str) -> int:
        return self.pds.index(self.truth["repos"][did]["pds"])

    def arrivals(self) -> dict[int, list[float]]:
        """GET /_simnet/arrivals: epoch seconds of every getRepo arrival, per host index."""
        url = f"{self.pds[0]}/_simnet/arrivals"
        _check_local(url)
        with urllib.request.urlopen(url, timeout=30) as resp:
            return {int(k): v for k, v in json.loads(resp.read()).items()}


@contextlib.contextmanager
def simnet(args: argparse.Namespace, out: Path) -> Iterator[Network]:
    cmd = [sys.executable, "-m", "skyfill.simnet", "--accounts", str(args.accounts)]
    cmd += ["--hosts", str(args.hosts), "--mean-records", str(args.mean_records)]
    cmd += ["--seed", str(args.seed), "--out", str(out)]
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "simnet.log"
    started = time.perf_counter()
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
        dids = [d for d in Path(ready["dids"]).read_text().splitlines() if d.strip()]
        truth = json.loads(Path(ready["truth"]).read_text())
        _log(
            f"simnet up (pid {proc.pid}) in {time.perf_counter() - started:.1f}s: "
            f"{len(dids)} DIDs on {len(ready['pds'])} hosts"
        )
        yield Network(proc.pid, ready["plc"], ready["pds"], dids, truth)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


# -- one job ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Run:
    scenario: str
    workers: int
    dids: int
    expected_records: int
    submit_seconds: float
    started: float
    """Epoch seconds just before the first worker was started."""
    ended: float
    """Epoch seconds when the last worker had exited."""
    worker_exits: list[float]
    """Seconds from the start to each worker's exit."""
    returncodes: list[int]
    cpu_workers: float
    cpu_simnet: float
    cpu_redis: float
    load: float
    status: dict
    records: int
    problems: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def per_minute(self) -> float:
        return 60 * self.dids / self.seconds

    def shares(self) -> list[int]:
        workers = sorted(self.status.get("workers", []), key=lambda w: _worker_key(w))
        return [int(w.get("tasks_done", 0)) for w in workers]


def _worker_key(worker: dict) -> tuple[int, str]:
    name = str(worker.get("worker_id", ""))
    digits = name.lstrip("w")
    return (int(digits), name) if digits.isdigit() else (1 << 30, name)


def _status(skyfill: list[str], state: str, job_id: str) -> dict:
    cmd = [*skyfill, "status", job_id, "--state", state, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        _log(f"skyfill status gave no JSON: {done.stdout[-500:]} {done.stderr[-500:]}")
        return {}


def run_job(
    args: argparse.Namespace,
    skyfill: list[str],
    server: Redis,
    net: Network,
    dids: list[str],
    work: Path,
    scenario: str,
    workers: int,
    flags: list[str],
) -> Run:
    job_id = f"{scenario}-w{workers}"
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(redis.Redis.from_url(server.url)) as client:
        client.flushdb()
    dids_path = work / f"{job_id}.dids"
    dids_path.write_text("".join(f"{d}\n" for d in dids))
    submit = [*skyfill, "submit", "--state", server.url, "--dids", str(dids_path)]
    submit += ["--workdir", str(work), "--job-id", job_id, "--plc-url", net.plc]
    submit += ["--allow-private-network", "--batch-size", str(args.batch_size), *flags]
    _log(f"{job_id}: {len(dids)} DIDs, {workers} workers: {' '.join(submit)}")
    t = time.perf_counter()
    done = subprocess.run(submit, capture_output=True, text=True, check=False)
    submit_seconds = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"skyfill submit exited {done.returncode}:\n{done.stderr[-3000:]}")

    simnet_cpu, redis_cpu = _cpu(net.pid), _cpu(server.pid)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    logs, procs = [], []
    started = time.time()
    t0 = time.perf_counter()
    for k in range(1, workers + 1):
        log = open(work / f"{job_id}.worker{k}.log", "wb")  # noqa: SIM115 - closed below
        logs.append(log)
        cmd = [*skyfill, "worker", "--state", server.url, "--job", job_id]
        cmd += ["--worker-id", f"w{k}", "--progress", "none"]
        procs.append(subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT))
    exits: list[float | None] = [None] * workers
    try:
        while any(e is None for e in exits):
            now = time.perf_counter()
            for i, proc in enumerate(procs):
                if exits[i] is None and proc.poll() is not None:
                    exits[i] = now - t0
            if now - t0 > args.timeout:
                _log(f"{job_id}: timeout after {args.timeout:.0f}s: stopping the workers")
                for proc in procs:
                    if proc.poll() is None:
                        proc.send_signal(signal.SIGTERM)
                for i, proc in enumerate(procs):
                    try:
                        proc.wait(30)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
                    if exits[i] is None:
                        exits[i] = time.perf_counter() - t0
                break
            time.sleep(0.02)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        for log in logs:
            log.close()
    ended = started + max(e or 0.0 for e in exits)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_workers = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)

    status = _status(skyfill, server.url, job_id)
    records_dir = work / "jobs" / job_id / "output" / "records"
    records = (
        ds.dataset(records_dir, format="parquet", partitioning="hive").count_rows()
        if records_dir.exists()
        else 0
    )
    run = Run(
        scenario=scenario,
        workers=workers,
        dids=len(dids),
        expected_records=net.records(dids),
        submit_seconds=submit_seconds,
        started=started,
        ended=ended,
        worker_exits=[e or 0.0 for e in exits],
        returncodes=[p.returncode for p in procs],
        cpu_workers=cpu_workers,
        cpu_simnet=_cpu(net.pid) - simnet_cpu,
        cpu_redis=_cpu(server.pid) - redis_cpu,
        load=os.getloadavg()[0],
        status=status,
        records=records,
    )
    if status.get("status") != "completed":
        run.problems.append(f"status {status.get('status')!r}")
    if status.get("pending") != 0:
        run.problems.append(f"pending {status.get('pending')}")
    if status.get("done") != len(dids):
        run.problems.append(f"done {status.get('done')} of {len(dids)}")
    if status.get("by_status", {}).get("ok") != len(dids):
        run.problems.append(f"by_status {status.get('by_status')}")
    if records != run.expected_records:
        run.problems.append(f"records {records} != truth {run.expected_records}")
    if any(run.returncodes):
        run.problems.append(f"worker exit codes {run.returncodes}")
    if sum(run.shares()) != status.get("tasks", {}).get("done"):
        run.problems.append(f"tasks_done {run.shares()} vs tasks {status.get('tasks')}")
    _log(
        f"{job_id}: {run.seconds:.1f}s, status {status.get('status')}, "
        f"{records} records, tasks {run.shares()}"
        + (f"; PROBLEMS: {'; '.join(run.problems)}" if run.problems else "")
    )
    if run.problems:
        tail = (work / f"{job_id}.worker1.log").read_text()[-2000:]
        _log(f"worker 1's log ends:\n{tail}")
    shutil.rmtree(work / "jobs" / job_id, ignore_errors=True)
    return run


# -- report ----------------------------------------------------------------------------------


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True))
    print(f"\n{title}")
    print(line)
    print("-" * len(line))
    for row in rows:
        print("  ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)))


def _shares(run: Run) -> str:
    shares = run.shares()
    return "/".join(str(s) for s in shares) if shares else "-"


def _check(run: Run) -> str:
    return "ok" if not run.problems else "FAIL: " + "; ".join(run.problems)


def throughput_table(runs: list[Run], title: str) -> None:
    base = next((r for r in runs if r.workers == 1), None)
    rows = []
    for r in runs:
        speedup = f"{base.seconds / r.seconds:.2f}" if base else "-"
        busy = (r.cpu_workers + r.cpu_simnet + r.cpu_redis) / r.seconds
        rows.append(
            [
                str(r.workers),
                f"{r.seconds:.1f}",
                f"{r.submit_seconds:.1f}",
                str(r.dids),
                str(r.records),
                f"{r.per_minute:,.0f}",
                f"{r.records / r.seconds:,.0f}",
                speedup,
                _shares(r),
                f"{r.cpu_workers:.1f}",
                f"{r.cpu_simnet:.1f}",
                f"{r.cpu_redis:.1f}",
                f"{busy:.2f}",
                f"{r.load:.2f}",
                _check(r),
            ]
        )
    header = ["workers", "time s", "submit s", "DIDs", "records", "users/min", "rec/s"]
    header += ["speed-up", "tasks per worker", "cpu wk", "cpu sim", "cpu redis", "cores busy"]
    header += ["load 1m", "check"]
    _table(title, header, rows)


@dataclass(slots=True)
class HostRate:
    requests: int
    rate: float
    """(n - 1) / (last - first)."""
    most_in_window: int


def host_rates(
    arrivals: dict[int, list[float]], start: float, end: float, window: float
) -> dict[int, HostRate]:
    result = {}
    for host, times in arrivals.items():
        ts = sorted(t for t in times if start <= t <= end)
        if not ts:
            continue
        rate = (len(ts) - 1) / (ts[-1] - ts[0]) if len(ts) > 1 and ts[-1] > ts[0] else 0.0
        most, lo = 0, 0
        for hi, t in enumerate(ts):
            while t - ts[lo] >= window:
                lo += 1
            most = max(most, hi - lo + 1)
        result[host] = HostRate(len(ts), rate, most)
    return result


def limited_table(runs: list[tuple[Run, dict[int, HostRate]]], spec: RateSpec, hosts: int) -> None:
    base = next((r for r, _ in runs if r.workers == 1), None)
    rows = []
    for r, rates in runs:
        requests = sum(h.requests for h in rates.values())
        per_host = [h.rate for h in rates.values()]
        speedup = f"{base.seconds / r.seconds:.2f}" if base else "-"
        rows.append(
            [
                str(r.workers),
                f"{r.seconds:.1f}",
                str(r.dids),
                f"{r.dids / r.seconds:.1f}",
                f"{r.per_minute:,.0f}",
                speedup,
                str(requests),
                f"{requests / r.seconds:.1f}",
                f"{min(per_host, default=0):.1f}-{max(per_host, default=0):.1f}",
                str(max((h.most_in_window for h in rates.values()), default=0)),
                f"{spec.requests}",
                _shares(r),
                f"{r.load:.2f}",
                _check(r),
            ]
        )
    header = ["workers", "time s", "DIDs", "DIDs/s", "users/min", "speed-up", "getRepo"]
    header += ["getRepo/s", "per host req/s", f"max in {spec.window:g}s", "budget"]
    header += ["tasks per worker", "load 1m", "check"]
    _table(
        f"limited: every PDS host held to {spec} ({spec.per_second:g}/s; {hosts} hosts, "
        f"{hosts * spec.per_second:g}/s together) by --rate-limit, shared through Redis",
        header,
        rows,
    )


# -- main ------------------------------------------------------------------------------------


def _skyfill_command(arg: str | None) -> list[str]:
    if arg:
        return arg.split()
    script = Path(sys.executable).with_name("skyfill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "skyfill"]


def _counts(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/distributed.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--accounts", type=int, default=2000, help="simnet accounts")
    p.add_argument("--hosts", type=int, default=8, help="simnet PDS hosts")
    p.add_argument("--mean-records", type=int, default=30, help="simnet typical records")
    p.add_argument("--seed", type=int, default=7, help="simnet seed")
    p.add_argument("--workers", default="1,2,4,8", help="worker counts (default %(default)s)")
    p.add_argument("--batch-size", type=int, default=50, help="submit --batch-size")
    p.add_argument(
        "--scenario",
        action="append",
        choices=SCENARIOS,
        help="run only this scenario (repeatable; default: all)",
    )
    p.add_argument(
        "--limited-rate", default="20/1s", help="limited: every PDS host's rate (%(default)s)"
    )
    p.add_argument(
        "--limited-dids", type=int, default=800, help="limited: DIDs per job (%(default)s)"
    )
    p.add_argument(
        "--limited-workers",
        default=None,
        help="limited: worker counts (default: those of --workers)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per job at most")
    p.add_argument(
        "--skyfill",
        default=None,
        help="skyfill command (default: the skyfill next to this python, else python -m skyfill)",
    )
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    scenarios = args.scenario or list(SCENARIOS)
    skyfill = _skyfill_command(args.skyfill)
    spec = parse_rate(args.limited_rate)
    started = time.perf_counter()
    import skyfill as skyfill_module

    print(
        f"distributed benchmark: {os.cpu_count()} cpus, load average at start "
        f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; skyfill from "
        f"{Path(skyfill_module.__file__).parent}"
    )
    tmp = Path(tempfile.mkdtemp(prefix="skyfill-bench-distributed-"))
    try:
        with redis_server(tmp / "redis") as server, simnet(args, tmp / "net") as net:
            print(
                f"network: {len(net.dids)} DIDs on {len(net.pds)} PDS hosts, "
                f"{net.records(net.dids)} records; batch size {args.batch_size}"
            )
            if "throughput" in scenarios:
                runs = [
                    run_job(args, skyfill, server, net, net.dids, tmp / "work", "tput", w, [])
                    for w in _counts(args.workers)
                ]
                throughput_table(
                    runs,
                    f"throughput: {len(net.dids)} DIDs, default rate limit (3000/5m per host)",
                )
            if "limited" in scenarios:
                dids = net.dids[: args.limited_dids]
                plc = urllib.parse.urlsplit(net.plc).netloc
                flags = ["--rate-limit", args.limited_rate, "--hosts", f"{plc}=3000/5m"]
                limited = []
                for w in _counts(args.limited_workers or args.workers):
                    run = run_job(args, skyfill, server, net, dids, tmp / "work", "lim", w, flags)
                    rates = host_rates(net.arrivals(), run.started, run.ended, spec.window)
                    limited.append((run, rates))
                limited_table(limited, spec, len({net.host_of(d) for d in dids}))
        print(
            "\ntime s = first worker started -> last worker exited; submit s = `skyfill submit` "
            "(planning into Redis), not in time s;\nusers/min = DIDs per minute over time s; "
            "speed-up = time of 1 worker / time; tasks per worker = tasks_done of w1/w2/... "
            "from `skyfill status --json`;\ncpu wk/sim/redis = user+sys CPU seconds of the "
            "workers (with their decode processes), the simnet and redis-server during the "
            "run;\ncores busy = their sum / time s; load 1m = 1-minute load average at the "
            "end of the run; check = status completed, pending 0, all DIDs ok,\nrecords in "
            "output/records = truth, workers exited 0.\nlimited: getRepo = arrivals at the "
            "PDS hosts during the run (simnet), per host req/s = (n - 1) / (last - first) "
            "per host (lowest-highest),\nmax in W = most getRepo arrivals at one host in "
            "any sliding window of the rate's length, budget = requests allowed per window."
        )
        print(f"total wall time {time.perf_counter() - started:.0f}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

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
once the cores are busy; the cores busy on the whole machine (psutil.cpu_times, every
process, other users' too) and the 1-minute load average at the end of each run are printed.
The simnet's getRepo arrivals split each run into start-up (start -> first getRepo),
fetching (first -> last getRepo) and tail (last getRepo -> last exit: the last batches'
decoding and files, and the aggregation).

Scenarios:
throughput  all DIDs of the network, skyfill's default rate limit (3000/5m per host);
            `--repeats` runs per worker count (default 2, the order reversed every other
            repeat), the best reported, and a row `run`: one `skyfill run` process with
            the same flags (local state, no Redis), for comparison (`--no-run` skips it).
limited     the DIDs (at most `--limited-dids`) of the first `--limited-hosts` PDS hosts
            (default 2, so that the hosts' budgets together are below what one worker does
            unlimited), with every PDS host held to `--limited-rate` (default 20/1s) by
            `--rate-limit RATE` on submit, which the workers share through Redis; the PLC
            keeps the default 3000/5m (`--hosts PLC=3000/5m`), so that the PDS budgets, not
            the PLC, are the bound. One run per worker count. The simnet itself enforces
            no limit: what is measured is what skyfill sends. From `GET
            <pds>/_simnet/arrivals` (epoch time of every getRepo arrival per host), filtered
            to the run's span: per host the achieved rate ((n - 1) / (last - first)) and the
            most requests in any sliding window of the rate's length, against the budget.

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
import statistics
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
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", port), timeout=1) as sock,
            ):
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
    """0: one `skyfill run` process (local state, no Redis) instead of submit + workers."""
    dids: int
    expected_records: int
    submit_seconds: float
    started: float
    """Epoch seconds just before the first worker was started."""
    ended: float
    """Epoch seconds when the last worker had exited."""
    returncodes: list[int]
    cpu_workers: float
    cpu_simnet: float
    cpu_redis: float
    machine_busy: float
    """CPU seconds of the whole machine (every process, other users' too) during the run."""
    load: float
    status: dict
    records: int
    arrivals: dict[int, list[float]] = field(default_factory=dict)
    """getRepo arrivals at each PDS host during the run (epoch seconds)."""
    problems: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return "run" if self.workers == 0 else str(self.workers)

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def per_minute(self) -> float:
        return 60 * self.dids / self.seconds

    def shares(self) -> list[int]:
        workers = sorted(self.status.get("workers", []), key=lambda w: _worker_key(w))
        return [int(w.get("tasks_done", 0)) for w in workers]

    def phases(self) -> tuple[float, float, float]:
        """(start -> first getRepo, first -> last getRepo, last getRepo -> last exit)."""
        times = [t for ts in self.arrivals.values() for t in ts]
        if not times:
            return (0.0, 0.0, self.seconds)
        first, last = min(times), max(times)
        return (first - self.started, last - first, self.ended - last)


def _worker_key(worker: dict) -> tuple[int, str]:
    name = str(worker.get("worker_id", ""))
    digits = name.lstrip("w")
    return (int(digits), name) if digits.isdigit() else (1 << 30, name)


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(getattr(t, f, 0.0) for f in ("user", "nice", "system", "irq", "softirq", "steal"))


def _status(skyfill: list[str], job_id: str, where: list[str]) -> dict:
    cmd = [*skyfill, "status", job_id, *where, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        _log(f"skyfill status gave no JSON: {done.stdout[-500:]} {done.stderr[-500:]}")
        return {}


def _wait_all(procs: list[subprocess.Popen], timeout: float, label: str) -> float:
    """Wait for every process; return seconds until the last one exited (SIGTERM at timeout)."""
    t0 = time.perf_counter()
    last = 0.0
    while any(p.poll() is None for p in procs):
        if time.perf_counter() - t0 > timeout:
            _log(f"{label}: timeout after {timeout:.0f}s: stopping it (SIGTERM)")
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
            return time.perf_counter() - t0
        time.sleep(0.02)
        last = time.perf_counter() - t0
    return last


def run_job(
    args: argparse.Namespace,
    skyfill: list[str],
    server: Redis,
    net: Network,
    dids: list[str],
    work: Path,
    job_id: str,
    workers: int,
    flags: list[str],
) -> Run:
    """A fresh job: `skyfill submit` then `workers` workers started together; workers=0: one
    `skyfill run` with the same flags and no Redis."""
    work.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(redis.Redis.from_url(server.url)) as client:
        client.flushdb()
    dids_path = work / f"{job_id}.dids"
    dids_path.write_text("".join(f"{d}\n" for d in dids))
    common = ["--dids", str(dids_path), "--workdir", str(work), "--job-id", job_id]
    common += ["--plc-url", net.plc, "--allow-private-network"]
    common += ["--batch-size", str(args.batch_size), *flags]
    submit_seconds = 0.0
    if workers:
        submit = [*skyfill, "submit", "--state", server.url, *common]
        _log(f"{job_id}: {len(dids)} DIDs, {workers} workers: {' '.join(submit)}")
        t = time.perf_counter()
        done = subprocess.run(submit, capture_output=True, text=True, check=False)
        submit_seconds = time.perf_counter() - t
        if done.returncode != 0:
            raise SystemExit(f"skyfill submit exited {done.returncode}:\n{done.stderr[-3000:]}")
        worker = [*skyfill, "worker", "--state", server.url, "--job", job_id]
        commands = [
            [*worker, "--worker-id", f"w{k}", "--progress", "none"] for k in range(1, workers + 1)
        ]
    else:
        commands = [[*skyfill, "run", *common, "--progress", "none"]]
        _log(f"{job_id}: {len(dids)} DIDs: {' '.join(commands[0])}")

    simnet_cpu, redis_cpu, busy = _cpu(net.pid), _cpu(server.pid), _busy_seconds()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    logs = [open(work / f"{job_id}.{k}.log", "wb") for k in range(len(commands))]  # noqa: SIM115
    started = time.time()
    try:
        procs = [
            subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            for cmd, log in zip(commands, logs, strict=True)
        ]
        seconds = _wait_all(procs, args.timeout, job_id)
    finally:
        for log in logs:
            log.close()
    ended = started + seconds
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy = _busy_seconds() - busy

    where = ["--state", server.url] if workers else ["--workdir", str(work)]
    status = _status(skyfill, job_id, where)
    records_dir = work / "jobs" / job_id / "output" / "records"
    records = (
        ds.dataset(records_dir, format="parquet", partitioning="hive").count_rows()
        if records_dir.exists()
        else 0
    )
    arrivals = {
        host: [t for t in times if started <= t <= ended] for host, times in net.arrivals().items()
    }
    run = Run(
        scenario=job_id,
        workers=workers,
        dids=len(dids),
        expected_records=net.records(dids),
        submit_seconds=submit_seconds,
        started=started,
        ended=ended,
        returncodes=[p.returncode for p in procs],
        cpu_workers=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
        cpu_simnet=_cpu(net.pid) - simnet_cpu,
        cpu_redis=_cpu(server.pid) - redis_cpu,
        machine_busy=busy,
        load=os.getloadavg()[0],
        status=status,
        records=records,
        arrivals={h: ts for h, ts in arrivals.items() if ts},
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
        run.problems.append(f"exit codes {run.returncodes}")
    if workers and sum(run.shares()) != status.get("tasks", {}).get("done"):
        run.problems.append(f"tasks_done {run.shares()} vs tasks {status.get('tasks')}")
    _log(
        f"{job_id}: {run.seconds:.1f}s, status {status.get('status')}, "
        f"{records} records, tasks {run.shares()}"
        + (f"; PROBLEMS: {'; '.join(run.problems)}" if run.problems else "")
    )
    if run.problems:
        _log(f"its first process's log ends:\n{(work / f'{job_id}.0.log').read_text()[-2000:]}")
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


def _check(runs: list[Run]) -> str:
    bad = [f"#{i + 1}: " + "; ".join(r.problems) for i, r in enumerate(runs) if r.problems]
    return "ok" if not bad else "FAIL " + " | ".join(bad)


def _best(runs: list[Run]) -> Run:
    return min(runs, key=lambda r: r.seconds)


def throughput_table(series: dict[int, list[Run]], title: str) -> None:
    base = _best(series[1]) if 1 in series else None
    rows = []
    for runs in series.values():
        r = _best(runs)
        speedup = f"{base.seconds / r.seconds:.2f}" if base else "-"
        ours = (r.cpu_workers + r.cpu_simnet + r.cpu_redis) / r.seconds
        first, fetch, tail = r.phases()
        rows.append(
            [
                r.label,
                str(len(runs)),
                f"{r.seconds:.1f}",
                f"{statistics.median(x.seconds for x in runs):.1f}",
                f"{r.submit_seconds:.1f}" if r.workers else "-",
                str(r.dids),
                str(r.records),
                f"{r.per_minute:,.0f}",
                f"{r.records / r.seconds:,.0f}",
                speedup,
                f"{first:.1f}",
                f"{fetch:.1f}",
                f"{tail:.1f}",
                _shares(r),
                f"{r.cpu_workers:.1f}",
                f"{r.cpu_simnet:.1f}",
                f"{r.cpu_redis:.1f}",
                f"{ours:.2f}",
                f"{r.machine_busy / r.seconds:.2f}",
                f"{r.load:.2f}",
                _check(runs),
            ]
        )
    header = ["workers", "runs", "best s", "med s", "submit s", "DIDs", "records", "users/min"]
    header += ["rec/s", "speed-up", "to 1st", "fetching", "tail", "tasks per worker"]
    header += ["cpu wk", "cpu sim", "cpu redis", "ours", "machine", "load 1m", "check"]
    _table(title, header, rows)


@dataclass(slots=True)
class HostRate:
    requests: int
    rate: float
    """(n - 1) / (last - first)."""
    most_in_window: int


def host_rates(arrivals: dict[int, list[float]], window: float) -> dict[int, HostRate]:
    result = {}
    for host, times in arrivals.items():
        ts = sorted(times)
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


def limited_table(runs: list[Run], spec: RateSpec, hosts: int) -> None:
    base = next((r for r in runs if r.workers == 1), None)
    rows = []
    for r in runs:
        rates = host_rates(r.arrivals, spec.window)
        requests = sum(h.requests for h in rates.values())
        per_host = [h.rate for h in rates.values()]
        speedup = f"{base.seconds / r.seconds:.2f}" if base else "-"
        first, fetch, tail = r.phases()
        rows.append(
            [
                r.label,
                f"{r.seconds:.1f}",
                str(r.dids),
                f"{r.dids / r.seconds:.1f}",
                f"{r.per_minute:,.0f}",
                speedup,
                f"{first:.1f}",
                f"{fetch:.1f}",
                f"{tail:.1f}",
                str(requests),
                f"{(requests - 1) / fetch:.1f}" if fetch > 0 else "-",
                f"{min(per_host, default=0):.1f}-{max(per_host, default=0):.1f}",
                str(max((h.most_in_window for h in rates.values()), default=0)),
                f"{spec.requests}",
                _shares(r),
                f"{r.machine_busy / r.seconds:.2f}",
                f"{r.load:.2f}",
                _check([r]),
            ]
        )
    header = ["workers", "time s", "DIDs", "DIDs/s", "users/min", "speed-up", "to 1st"]
    header += ["fetching", "tail", "getRepo", "getRepo/s", "per host req/s"]
    header += [f"max in {spec.window:g}s", "budget", "tasks per worker", "machine", "load 1m"]
    header += ["check"]
    _table(
        f"limited: {runs[0].dids if runs else 0} DIDs on {hosts} PDS hosts, each held to "
        f"{spec} by --rate-limit (shared through Redis): {hosts} x {spec.per_second:g}/s = "
        f"{hosts * spec.per_second:g}/s together",
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
    p.add_argument("--repeats", type=int, default=2, help="throughput: runs per worker count")
    p.add_argument(
        "--no-run",
        action="store_true",
        help="throughput: skip the `skyfill run` row (one process, no Redis)",
    )
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
        "--limited-dids",
        type=int,
        default=0,
        help="limited: DIDs per job at most (default 0: all DIDs of those hosts)",
    )
    p.add_argument(
        "--limited-hosts",
        type=int,
        default=2,
        help="limited: take DIDs of the first K PDS hosts only (%(default)s)",
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
        work = tmp / "work"
        with redis_server(tmp / "redis") as server, simnet(args, tmp / "net") as net:
            print(
                f"network: {len(net.dids)} DIDs on {len(net.pds)} PDS hosts, "
                f"{net.records(net.dids)} records; batch size {args.batch_size}"
            )
            if "throughput" in scenarios:
                counts = _counts(args.workers) + ([] if args.no_run else [0])
                series: dict[int, list[Run]] = {w: [] for w in counts}
                for repeat in range(args.repeats):
                    # Alternate the order repeat by repeat, so drift hits all counts alike.
                    for w in counts if repeat % 2 == 0 else counts[::-1]:
                        job = f"tput-{'run' if w == 0 else f'w{w}'}-r{repeat + 1}"
                        series[w].append(
                            run_job(args, skyfill, server, net, net.dids, work, job, w, [])
                        )
                throughput_table(
                    series,
                    f"throughput: {len(net.dids)} DIDs on {len(net.pds)} PDS hosts, skyfill's "
                    f"default rate limit (3000/5m per host); best of {args.repeats}",
                )
            if "limited" in scenarios:
                hosts = min(args.limited_hosts, len(net.pds))
                dids = [d for d in net.dids if net.host_of(d) < hosts][: args.limited_dids or None]
                plc = urllib.parse.urlsplit(net.plc).netloc
                flags = ["--rate-limit", args.limited_rate, "--hosts", f"{plc}=3000/5m"]
                limited = [
                    run_job(args, skyfill, server, net, dids, work, f"lim-w{w}", w, flags)
                    for w in _counts(args.limited_workers or args.workers)
                ]
                limited_table(limited, spec, hosts)
        print(
            "\nworkers: run = one `skyfill run` process (local state, no Redis), same flags; "
            "time (best s, med s, time s) = first worker started -> last worker exited;\n"
            "submit s = `skyfill submit` (planning into Redis), not in the time; users/min = "
            "DIDs per minute; speed-up = time of 1 worker / time;\nto 1st / fetching / tail "
            "= start -> first getRepo at a PDS, first -> last getRepo, last getRepo -> last "
            "exit (simnet arrivals);\ntasks per worker = tasks_done of w1/w2/... from "
            "`skyfill status --json`; cpu wk/sim/redis = user+sys CPU seconds of the workers "
            "(with their\ndecode processes), the simnet and redis-server during the run; "
            "ours = their sum / time, in cores; machine = cores busy on the whole machine "
            "(other\nusers' processes too); load 1m = 1-minute load average at the end of "
            "the run; check = status completed, pending 0, all DIDs ok, records in\n"
            "output/records = truth file, exit codes 0, tasks_done sum = tasks done.\n"
            "limited: getRepo = arrivals at the PDS hosts during the run, getRepo/s = over "
            "the fetching span, per host req/s = (n - 1) / (last - first) per host\n"
            "(lowest-highest), max in W = most getRepo arrivals at one host in any sliding "
            "window of the rate's length, budget = requests allowed per window."
        )
        print(f"total wall time {time.perf_counter() - started:.0f}s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()

"""Rate-limit and memory benchmark: `skyfill run` against rate-limited simulated PDS hosts.

Three scenarios, each against its own `python -m skyfill.simnet` (PLC + PDS hosts on
loopback, in its own process, stopped by PID with SIGTERM at the end of the scenario), each
`skyfill run` a fresh job in a temporary workdir:

strict     one PDS host enforcing a fixed window (`--limit`, default 20/10s, as the
           reference PDS's limiter does: RateLimit-Limit/-Remaining/-Reset, 429 beyond it);
           skyfill with its default flags. DIDs default to LIMIT * round(75 s / window) + 1,
           so that a perfect client (a full window at each window start) spans exactly
           whole windows and its achieved rate equals the allowed rate. Reported: achieved
           request rate at the PDS = (served - 1) / (last - first fetched_at in
           repos.parquet), the allowed rate, their ratio (goal >= 90 %), the 429s the
           server sent (goal <= 1) and skyfill's own count of 429s (`skyfill status --json`).
throttled  ten PDS hosts, nine without a limit and host 0 throttled (`--throttle`,
           default 0=1/1s). Run (a): the nine hosts' DIDs plus `--throttled-dids` of host 0's
           DIDs, spread evenly through the DID file (so every batch meets the slow host);
           run (b): the nine hosts' DIDs alone. Per host: completion time = last fetched_at
           of its DIDs - job start (the `skyfill run` process start); the nine hosts' DIDs/s
           in each run and their ratio (goal: the nine finish close to their pace alone).
memory     one network with many large repos (`--mem-accounts` accounts of mean
           `--mem-mean-records` records, heavy-tailed) and account 0 with `--big` records
           (~325 B of CAR each); run with `--max-memory` (default 300m) and without.
           The RSS of the `skyfill run` process tree (it and all its children, summed) is
           sampled with psutil every 50 ms; reported: peak tree RSS, peak RSS of the main
           process and of the largest child, skyfill's own peak (status "memory"), the
           outcome per status, and the errors of failed DIDs.

Host indices follow the simnet's round-robin placement (account i on host i % H); which
host serves a DID is taken from the truth file's "pds" field. Only localhost is contacted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from skyfill.ratelimit.spec import RateSpec, parse_rate

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SCENARIOS = ("strict", "throttled", "memory")
SAMPLE_SECONDS = 0.05
MB = 1e6


# -- the simulated network -------------------------------------------------------------------


@dataclass(slots=True)
class Network:
    pid: int
    plc: str
    pds: list[str]
    dids: list[str]
    truth: dict
    command: list[str]

    def host_of(self, did: str) -> int:
        return self.pds.index(self.truth["repos"][did]["pds"])

    def stats(self) -> list[dict]:
        """GET /_simnet/stats: per host served, limit, limited (429s sent), max_in_window."""
        url = f"{self.pds[0]}/_simnet/stats"
        _check_local(url)
        with urllib.request.urlopen(url, timeout=10) as resp:
            return json.loads(resp.read())["hosts"]


def _check_local(url: str) -> None:
    host = urllib.parse.urlsplit(url).hostname
    if host not in LOCAL_HOSTS:
        raise SystemExit(f"refusing non-local URL {url!r}")


@contextlib.contextmanager
def simnet(out: Path, *options: str) -> Iterator[Network]:
    """Start `python -m skyfill.simnet --out OUT OPTIONS...`; stop it by PID (SIGTERM)."""
    cmd = [sys.executable, "-m", "skyfill.simnet", *options, "--out", str(out)]
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
        yield Network(proc.pid, ready["plc"], ready["pds"], dids, truth, cmd)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


# -- skyfill runs ----------------------------------------------------------------------------


@dataclass(slots=True)
class Repo:
    did: str
    status: str
    pds: str | None
    fetched_at: float | None
    error: str | None
    car_bytes: int | None


@dataclass(slots=True)
class Run:
    label: str
    command: list[str]
    started: float
    """Epoch seconds just before the `skyfill run` process was started (the job start)."""
    seconds: float
    returncode: int
    peak_tree_rss: int
    peak_main_rss: int
    peak_child_rss: int
    repos: list[Repo]
    status: dict
    extra: dict = field(default_factory=dict)

    def by_status(self) -> Counter[str]:
        return Counter(r.status for r in self.repos)

    def host_stats(self, url: str) -> dict:
        """skyfill's per-host counters (`status --json` "hosts") for a PDS URL."""
        netloc = urllib.parse.urlsplit(url).netloc.lower()
        return self.status.get("hosts", {}).get(netloc, {})


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _skyfill_command(arg: str | None) -> list[str]:
    if arg:
        return arg.split()
    script = Path(sys.executable).with_name("skyfill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "skyfill"]


def _run_sampled(cmd: list[str], log: Path, timeout: float) -> tuple[int, float, float, dict]:
    """Run `cmd`; sample the RSS of its process tree every 50 ms.

    Returns (exit code, start epoch, wall seconds, peaks). The tree is the process and all
    its descendants (forkserver, decode workers); the tree's RSS is the sum over them (shared
    pages counted once per process, as skyfill's own memory gate counts them).
    """
    peaks = {"tree": 0, "main": 0, "child": 0}
    with open(log, "wb") as out:
        started_epoch = time.time()
        started = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                if time.perf_counter() - started > timeout:
                    _log(f"timeout after {timeout:.0f}s: stopping skyfill (pid {proc.pid})")
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(30)
                    break
                with contextlib.suppress(psutil.Error):
                    total = main = proc.memory_info().rss
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            rss = child.memory_info().rss
                            total += rss
                            peaks["child"] = max(peaks["child"], rss)
                    peaks["tree"] = max(peaks["tree"], total)
                    peaks["main"] = max(peaks["main"], main)
                time.sleep(SAMPLE_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return proc.returncode, started_epoch, time.perf_counter() - started, peaks


def run_skyfill(
    skyfill: list[str],
    net: Network,
    dids: list[str],
    work: Path,
    job_id: str,
    label: str,
    flags: list[str],
    timeout: float,
) -> Run:
    work.mkdir(parents=True, exist_ok=True)
    dids_path = work / f"{job_id}.dids"
    dids_path.write_text("".join(f"{d}\n" for d in dids))
    cmd = [
        *skyfill,
        "run",
        "--dids",
        str(dids_path),
        "--plc-url",
        net.plc,
        "--allow-private-network",
        "--workdir",
        str(work),
        "--job-id",
        job_id,
        "--progress",
        "none",
        *flags,
    ]
    _log(f"{label}: {len(dids)} DIDs: {' '.join(cmd)}")
    log = work / f"{job_id}.log"
    code, started, seconds, peaks = _run_sampled(cmd, log, timeout)
    _log(f"{label}: exit {code} after {seconds:.1f}s")
    if code != 0:
        _log(f"skyfill exited {code}; its log ends:\n{log.read_text()[-3000:]}")
    status = _status(skyfill, work, job_id)
    return Run(
        label=label,
        command=cmd,
        started=started,
        seconds=seconds,
        returncode=code,
        peak_tree_rss=peaks["tree"],
        peak_main_rss=peaks["main"],
        peak_child_rss=peaks["child"],
        repos=_repos(work / "jobs" / job_id / "output" / "repos.parquet"),
        status=status,
    )


def _status(skyfill: list[str], work: Path, job_id: str) -> dict:
    cmd = [*skyfill, "status", job_id, "--workdir", str(work), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        _log(f"skyfill status gave no JSON: {done.stdout[-500:]} {done.stderr[-500:]}")
        return {}


def _repos(path: Path) -> list[Repo]:
    if not path.exists():
        return []
    columns = ["did", "status", "pds", "fetched_at", "error", "car_bytes"]
    rows = pq.read_table(path, columns=columns).to_pylist()
    return [
        Repo(
            did=r["did"],
            status=r["status"],
            pds=r["pds"],
            fetched_at=r["fetched_at"].timestamp() if r["fetched_at"] else None,
            error=r["error"],
            car_bytes=r["car_bytes"],
        )
        for r in rows
    ]


# -- report helpers --------------------------------------------------------------------------


def _table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    line = "  ".join(
        f"{h:<{w}}" if i == 0 else f"{h:>{w}}"
        for i, (h, w) in enumerate(zip(header, widths, strict=True))
    )
    print(f"\n{title}")
    print(line)
    print("-" * len(line))
    for row in rows:
        print(
            "  ".join(
                f"{c:<{w}}" if i == 0 else f"{c:>{w}}"
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            )
        )


def _statuses(run: Run) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(run.by_status().items())) or "(no output)"


def _mb(value: int | float | None) -> str:
    return "-" if value is None else f"{value / MB:.0f}"


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


# -- scenario 1: strict ----------------------------------------------------------------------


def strict(args: argparse.Namespace, skyfill: list[str], tmp: Path) -> None:
    spec = parse_rate(args.limit)
    windows = max(1, round(args.strict_seconds / spec.window))
    count = args.strict_dids or spec.requests * windows + 1
    options = [
        "--accounts",
        str(count),
        "--hosts",
        "1",
        "--mean-records",
        str(args.strict_mean_records),
        "--rate-limit",
        args.limit,
    ]
    print(f"\n== strict: one host limited to {args.limit}, {count} DIDs, skyfill default flags")
    with simnet(tmp / "strict-net", *options) as net:
        print(f"simnet: {' '.join(['python', *net.command[1:]])}")
        run = run_skyfill(
            skyfill, net, net.dids, tmp / "strict", "strict", "strict", [], args.timeout
        )
        host = net.stats()[0]
    print(f"skyfill: {' '.join(run.command)}")
    _strict_table(run, host, spec)


def _strict_table(run: Run, host: dict, spec: RateSpec) -> None:
    times = sorted(r.fetched_at for r in run.repos if r.status == "ok" and r.fetched_at)
    served = host["served"]
    span = times[-1] - times[0] if len(times) > 1 else float("nan")
    achieved = (served - 1) / span if span and span > 0 else float("nan")
    allowed = spec.per_second
    ideal = math.floor((served - 1) / spec.requests) * spec.window
    mine = run.host_stats(host["url"])
    rows = [
        ["DIDs", str(len(run.repos))],
        ["outcome", _statuses(run)],
        ["elapsed (skyfill run, s)", f"{run.seconds:.1f}"],
        ["repos served by the PDS (200)", str(served)],
        ["first -> last fetched_at (s)", f"{span:.1f}"],
        ["ideal span for a perfect client (s)", f"{ideal:.1f}"],
        ["achieved rate = (served-1)/span (req/s)", f"{achieved:.3f}"],
        ["allowed rate (req/s)", f"{allowed:.3f}"],
        ["achieved / allowed (goal >= 90%)", _pct(achieved / allowed)],
        ["server max requests in one window", f"{host.get('max_in_window')} of {spec.requests}"],
        ["429s sent by the server (goal <= 1)", str(host.get("limited"))],
        ["429s counted by skyfill (status hosts)", str(mine.get("rate_limited"))],
        ["skyfill requests to the PDS", str(mine.get("requests"))],
        ["skyfill wait_seconds (sum over requests)", str(mine.get("wait_seconds"))],
        ["skyfill rate_per_s at the end", str(mine.get("rate_per_s"))],
    ]
    _table(f"strict: one PDS host, fixed window {spec}", ["measure", "value"], rows)
    ok = achieved / allowed >= 0.9 and (host.get("limited") or 0) <= 1
    print(f"goals (>= 90% of the allowed rate, <= 1 429): {'met' if ok else 'NOT met'}")


# -- scenario 2: throttled -------------------------------------------------------------------


def throttled(args: argparse.Namespace, skyfill: list[str], tmp: Path) -> None:
    hosts = 10
    options = [
        "--accounts",
        str(args.throttled_accounts),
        "--hosts",
        str(hosts),
        "--mean-records",
        str(args.throttled_mean_records),
        "--throttle",
        args.throttle,
    ]
    slow = int(args.throttle.partition("=")[0])
    print(
        f"\n== throttled: {hosts} hosts, host {slow} throttled ({args.throttle}), "
        f"{args.throttled_accounts} accounts"
    )
    with simnet(tmp / "throttled-net", *options) as net:
        print(f"simnet: {' '.join(['python', *net.command[1:]])}")
        on_slow = [d for d in net.dids if net.host_of(d) == slow]
        keep = set(_spread(on_slow, args.throttled_dids))
        full = [d for d in net.dids if net.host_of(d) != slow or d in keep]
        nine = [d for d in net.dids if net.host_of(d) != slow]
        before = net.stats()
        run_a = run_skyfill(
            skyfill, net, full, tmp / "thr-a", "thr-a", "(a) all ten hosts", [], args.timeout
        )
        after_a = net.stats()
        run_b = run_skyfill(
            skyfill, net, nine, tmp / "thr-b", "thr-b", "(b) nine hosts alone", [], args.timeout
        )
        after_b = net.stats()
    print(f"skyfill (a): {' '.join(run_a.command)}")
    print(f"skyfill (b): {' '.join(run_b.command)}")
    _throttled_tables(net, slow, run_a, run_b, before, after_a, after_b)


def _spread(items: list[str], count: int) -> list[str]:
    """`count` items taken evenly across the list."""
    if count >= len(items):
        return list(items)
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _completion(run: Run, net: Network) -> dict[int, tuple[int, int, float]]:
    """Per host index: (DIDs, ok, seconds from the job start to its last fetched_at)."""
    out: dict[int, tuple[int, int, float]] = {}
    for repo in run.repos:
        index = net.host_of(repo.did)
        dids, ok, last = out.get(index, (0, 0, 0.0))
        done = (repo.fetched_at - run.started) if repo.fetched_at else last
        out[index] = (dids + 1, ok + (repo.status == "ok"), max(last, done))
    return out


def _throttled_tables(
    net: Network,
    slow: int,
    run_a: Run,
    run_b: Run,
    before: list[dict],
    after_a: list[dict],
    after_b: list[dict],
) -> None:
    comp_a, comp_b = _completion(run_a, net), _completion(run_b, net)
    rows = []
    for index, url in enumerate(net.pds):
        a = comp_a.get(index)
        b = comp_b.get(index)
        limit = after_b[index].get("limit", "none")
        mine = run_a.host_stats(url)
        rows.append(
            [
                f"{index}{' (throttled)' if index == slow else ''}",
                limit,
                f"{a[0]}" if a else "-",
                f"{a[1]}" if a else "-",
                f"{a[2]:.2f}" if a else "-",
                f"{b[0]}" if b else "-",
                f"{b[1]}" if b else "-",
                f"{b[2]:.2f}" if b else "-",
                f"{a[2] / b[2]:.2f}" if a and b and b[2] else "-",
                str(after_a[index].get("limited", 0) - before[index].get("limited", 0)),
                str(mine.get("rate_limited", "-")),
                str(mine.get("requests", "-")),
            ]
        )
    header = [
        "host",
        "limit",
        "(a) DIDs",
        "ok",
        "done s",
        "(b) DIDs",
        "ok",
        "done s",
        "a/b",
        "429 sent (a)",
        "429 seen (a)",
        "requests (a)",
    ]
    _table(
        "throttled: per-host completion (last fetched_at - job start), (a) all hosts, "
        "(b) the nine alone",
        header,
        rows,
    )

    def nine(run: Run, comp: dict[int, tuple[int, int, float]]) -> tuple[int, float]:
        dids = sum(v[0] for k, v in comp.items() if k != slow)
        last = max((v[2] for k, v in comp.items() if k != slow), default=float("nan"))
        return dids, last

    dids_a, last_a = nine(run_a, comp_a)
    dids_b, last_b = nine(run_b, comp_b)
    rate_a, rate_b = dids_a / last_a, dids_b / last_b
    rows = [
        [
            "(a) all ten hosts",
            f"{run_a.seconds:.1f}",
            _statuses(run_a),
            str(dids_a),
            f"{last_a:.2f}",
            f"{rate_a:.0f}",
        ],
        [
            "(b) nine hosts alone",
            f"{run_b.seconds:.1f}",
            _statuses(run_b),
            str(dids_b),
            f"{last_b:.2f}",
            f"{rate_b:.0f}",
        ],
    ]
    header = ["run", "elapsed s", "outcome", "nine DIDs", "nine done s", "nine DIDs/s"]
    _table("throttled: the nine unthrottled hosts", header, rows)
    print(
        f"nine hosts' DIDs/s, (a) / (b) = {rate_a / rate_b:.2f} "
        f"(1.00 = throttling host {slow} costs the others nothing)"
    )
    if slow in comp_a:
        d, _ok, s = comp_a[slow]
        print(f"host {slow}: {d} DIDs done after {s:.1f}s = {d / s:.2f} DIDs/s")


# -- scenario 3: memory ----------------------------------------------------------------------


def memory(args: argparse.Namespace, skyfill: list[str], tmp: Path) -> None:
    options = [
        "--accounts",
        str(args.mem_accounts),
        "--hosts",
        str(args.mem_hosts),
        "--mean-records",
        str(args.mem_mean_records),
        "--big",
        str(args.big),
    ]
    print(
        f"\n== memory: {args.mem_accounts} accounts (mean {args.mem_mean_records} records, "
        f"account 0: {args.big}), --max-memory {args.max_memory} vs no limit"
    )
    runs = []
    with simnet(tmp / "memory-net", *options) as net:
        print(f"simnet: {' '.join(['python', *net.command[1:]])}")
        flag_sets = [
            (f"--max-memory {args.max_memory}", ["--max-memory", args.max_memory]),
            ("no --max-memory", []),
        ]
        for i, (label, flags) in enumerate(flag_sets):
            job = f"mem-{i}"
            run = run_skyfill(skyfill, net, net.dids, tmp / job, job, label, flags, args.timeout)
            runs.append(run)
            shutil.rmtree(tmp / job / "jobs" / job / "output" / "records", ignore_errors=True)
    repos = net.truth["repos"]
    records = [len(r["records"]) for r in repos.values()]
    print(
        f"network: {len(repos)} repos, {sum(records)} records, largest {max(records)}, "
        f"second {sorted(records)[-2]}"
    )
    for run in runs:
        print(f"skyfill ({run.label}): {' '.join(run.command)}")
    _memory_table(runs)


def _memory_table(runs: list[Run]) -> None:
    rows = []
    for run in runs:
        mem = run.status.get("memory", {})
        cars = sorted((r.car_bytes or 0 for r in run.repos if r.status == "ok"), reverse=True)
        rows.append(
            [
                run.label,
                f"{run.seconds:.1f}",
                _statuses(run),
                _mb(sum(cars)),
                _mb(cars[0] if cars else None),
                _mb(run.peak_tree_rss),
                _mb(run.peak_main_rss),
                _mb(run.peak_child_rss),
                _mb(mem.get("peak_rss")),
                _mb(mem.get("limit")),
                str(mem.get("waits", "-")),
            ]
        )
    header = [
        "run",
        "elapsed s",
        "outcome",
        "CAR MB ok",
        "largest ok CAR MB",
        "peak tree RSS MB",
        "peak main MB",
        "peak child MB",
        "skyfill peak MB",
        "limit MB",
        "gate waits",
    ]
    _table("memory: RSS of the skyfill run process tree (psutil, every 50 ms)", header, rows)
    for run in runs:
        for repo in run.repos:
            if repo.status != "ok":
                print(f"{run.label}: {repo.did} {repo.status}: {repo.error}")


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/ratelimit.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--scenario",
        choices=(*SCENARIOS, "all"),
        default="all",
        help="which scenario to run (default: all)",
    )
    g = p.add_argument_group("strict")
    g.add_argument("--limit", default="20/10s", help="the host's fixed window (default 20/10s)")
    g.add_argument(
        "--strict-dids",
        type=int,
        default=0,
        help="DIDs (default: LIMIT * round(--strict-seconds / window) + 1; 161 for 20/10s)",
    )
    g.add_argument(
        "--strict-seconds",
        type=float,
        default=75.0,
        help="target span used for the default number of DIDs (default 75)",
    )
    g.add_argument("--strict-mean-records", type=int, default=20, help="default 20")
    g = p.add_argument_group("throttled")
    g.add_argument("--throttle", default="0=1/1s", help="INDEX=RATE (default 0=1/1s)")
    g.add_argument("--throttled-accounts", type=int, default=2000, help="default 2000")
    g.add_argument("--throttled-mean-records", type=int, default=20, help="default 20")
    g.add_argument(
        "--throttled-dids",
        type=int,
        default=40,
        help="DIDs of the throttled host in run (a), spread evenly (default 40)",
    )
    g = p.add_argument_group("memory")
    g.add_argument("--max-memory", default="300m", help="skyfill --max-memory (default 300m)")
    g.add_argument("--mem-accounts", type=int, default=120, help="default 120")
    g.add_argument("--mem-hosts", type=int, default=4, help="default 4")
    g.add_argument("--mem-mean-records", type=int, default=2000, help="default 2000")
    g.add_argument("--big", type=int, default=150000, help="records of account 0 (150000)")
    p.add_argument(
        "--timeout", type=float, default=600.0, help="seconds before a skyfill run is stopped"
    )
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument(
        "--skyfill",
        default=None,
        help="skyfill command (default: the skyfill next to this python, else python -m skyfill)",
    )
    return p.parse_args(argv)


def _machine() -> str:
    model = platform.processor() or "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()} cpus ({model}), load average {_load()}"


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    skyfill = _skyfill_command(args.skyfill)
    chosen = SCENARIOS if args.scenario == "all" else (args.scenario,)
    started = time.perf_counter()
    print(f"ratelimit benchmark: {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}")
    print(f"machine: {_machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="skyfill-bench-ratelimit-"))
    try:
        for name in chosen:
            scenario_started = time.perf_counter()
            {"strict": strict, "throttled": throttled, "memory": memory}[name](args, skyfill, tmp)
            print(f"({name}: {time.perf_counter() - scenario_started:.0f}s; load {_load()})")
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(f"\ntotal wall time {time.perf_counter() - started:.0f}s; load average {_load()}")


if __name__ == "__main__":
    main()

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
           runs (b1) before and (b2) after (a): the nine hosts' DIDs alone. Per host:
           completion time = last fetched_at of its DIDs - job start (the `skyfill run`
           process start); the nine hosts' DIDs/s in each run and (a) / best (b) (goal: the
           nine finish close to their pace alone); host 0's 429s, attempts and failures.
memory     one network with many large repos (`--mem-accounts` accounts of mean
           `--mem-mean-records` records, heavy-tailed) and account 0 with `--big` records
           (~325 B of CAR each); runs with `--max-memory` (default 300m), without it, and
           with `--max-memory` and `--concurrency 4` (`--mem-low-concurrency`). The RSS of
           the `skyfill run` process tree (it and all its children, summed, as skyfill's
           memory gate sums it) is sampled with psutil every 50 ms; reported: peak tree RSS
           (whole run, while fetching, after the last fetch), peak RSS of the main process
           and of the largest child, seconds above the limit, skyfill's own peak and gate
           waits (status "memory"), the outcome per status, and the errors of failed DIDs.
           A run in which no DID finishes for `--stall-seconds` is stopped (SIGTERM) and
           reported as stalled.

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pyarrow.parquet as pq

from skyfill.ratelimit.spec import RateSpec, parse_rate

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SCENARIOS = ("strict", "throttled", "memory")
SAMPLE_SECONDS = 0.05
STATUS_POLL = 3.0
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
    attempts: int | None


@dataclass(slots=True)
class Sample:
    at: float
    """Epoch seconds."""
    tree: int
    main: int
    child: int
    """RSS of the largest child."""


@dataclass(slots=True)
class Run:
    label: str
    command: list[str]
    started: float
    """Epoch seconds just before the `skyfill run` process was started (the job start)."""
    seconds: float
    returncode: int
    samples: list[Sample]
    repos: list[Repo]
    status: dict
    stalled: bool = False
    """Stopped by this script: no DID finished for --stall-seconds."""

    def by_status(self) -> Counter[str]:
        return Counter(r.status for r in self.repos)

    def host_stats(self, url: str) -> dict:
        """skyfill's per-host counters (`status --json` "hosts") for a PDS URL."""
        netloc = urllib.parse.urlsplit(url).netloc.lower()
        return self.status.get("hosts", {}).get(netloc, {})

    def last_fetch(self) -> float | None:
        times = [r.fetched_at for r in self.repos if r.fetched_at]
        return max(times) if times else None

    def peak(self, what: str, until: float | None = None, since: float | None = None) -> int:
        values = [
            getattr(s, what)
            for s in self.samples
            if (until is None or s.at <= until) and (since is None or s.at > since)
        ]
        return max(values, default=0)

    def seconds_over(self, limit: int) -> float:
        return SAMPLE_SECONDS * sum(1 for s in self.samples if s.tree > limit)


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _skyfill_command(arg: str | None) -> list[str]:
    if arg:
        return arg.split()
    script = Path(sys.executable).with_name("skyfill")
    return [str(script)] if script.exists() else [sys.executable, "-m", "skyfill"]


def _run_sampled(
    cmd: list[str],
    log: Path,
    timeout: float,
    progress: Callable[[], int | None] | None = None,
    stall_seconds: float = 0.0,
) -> tuple[int, float, float, list[Sample], bool]:
    """Run `cmd`; sample the RSS of its process tree every 50 ms.

    Returns (exit code, start epoch, wall seconds, samples, stalled). The tree is the
    process and all its descendants (decode workers, resource tracker); the tree's RSS is the sum
    over them (shared pages counted once per process, as skyfill's own memory gate counts
    them). With `progress` (DIDs done so far) and `stall_seconds`, the run is stopped
    (SIGTERM) once the count has not moved for that long.
    """
    samples: list[Sample] = []
    stalled = False
    with open(log, "wb") as out:
        started_epoch = time.time()
        started = time.perf_counter()
        proc = psutil.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        polled_at, done, moved_at = started, None, started
        try:
            while proc.poll() is None:
                now = time.perf_counter()
                if now - started > timeout:
                    _log(f"timeout after {timeout:.0f}s: stopping skyfill (pid {proc.pid})")
                    proc.send_signal(signal.SIGTERM)
                    proc.wait(60)
                    break
                if progress is not None and stall_seconds and now - polled_at >= STATUS_POLL:
                    polled_at = now
                    count = progress()
                    if count != done:
                        done, moved_at = count, now
                    elif now - moved_at >= stall_seconds:
                        _log(
                            f"no DID finished for {stall_seconds:.0f}s ({done} done): "
                            f"stopping skyfill (pid {proc.pid})"
                        )
                        stalled = True
                        proc.send_signal(signal.SIGTERM)
                        proc.wait(60)
                        break
                with contextlib.suppress(psutil.Error):
                    total = main = proc.memory_info().rss
                    largest = 0
                    for child in proc.children(recursive=True):
                        with contextlib.suppress(psutil.Error):
                            rss = child.memory_info().rss
                            total += rss
                            largest = max(largest, rss)
                    samples.append(Sample(time.time(), total, main, largest))
                time.sleep(SAMPLE_SECONDS)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
    return proc.returncode, started_epoch, time.perf_counter() - started, samples, stalled


def run_skyfill(
    skyfill: list[str],
    net: Network,
    dids: list[str],
    work: Path,
    job_id: str,
    label: str,
    flags: list[str],
    timeout: float,
    stall_seconds: float = 0.0,
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

    def progress() -> int | None:
        return _status(skyfill, work, job_id, quiet=True).get("done")

    code, started, seconds, samples, stalled = _run_sampled(
        cmd, log, timeout, progress if stall_seconds else None, stall_seconds
    )
    _log(f"{label}: exit {code} after {seconds:.1f}s")
    if code != 0:
        _log(f"skyfill exited {code}; its log ends:\n{log.read_text()[-3000:]}")
    return Run(
        label=label,
        command=cmd,
        started=started,
        seconds=seconds,
        returncode=code,
        samples=samples,
        repos=_repos(work / "jobs" / job_id / "output" / "repos.parquet"),
        status=_status(skyfill, work, job_id),
        stalled=stalled,
    )


def _status(skyfill: list[str], work: Path, job_id: str, quiet: bool = False) -> dict:
    cmd = [*skyfill, "status", job_id, "--workdir", str(work), "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return json.loads(done.stdout)
    except json.JSONDecodeError:
        if not quiet:
            _log(f"skyfill status gave no JSON: {done.stdout[-500:]} {done.stderr[-500:]}")
        return {}


def _repos(path: Path) -> list[Repo]:
    if not path.exists():
        return []
    columns = ["did", "status", "pds", "fetched_at", "error", "car_bytes", "attempts"]
    rows = pq.read_table(path, columns=columns).to_pylist()
    return [
        Repo(
            did=r["did"],
            status=r["status"],
            pds=r["pds"],
            fetched_at=r["fetched_at"].timestamp() if r["fetched_at"] else None,
            error=r["error"],
            car_bytes=r["car_bytes"],
            attempts=r["attempts"],
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


def _tasks(run: Run) -> str:
    """Tasks of the job, retry phases included (`skyfill status --json` "tasks")."""
    return str(run.status.get("tasks", {}).get("total", "?"))


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
        # (b) before and after (a): drift of the machine shows as a difference between them.
        plan = [
            ("thr-b1", "(b) nine hosts alone, before (a)", nine),
            ("thr-a", "(a) all ten hosts", full),
            ("thr-b2", "(b) nine hosts alone, after (a)", nine),
        ]
        runs: dict[str, Run] = {}
        served: dict[str, list[dict]] = {}
        for job, label, dids in plan:
            before = net.stats()
            runs[job] = run_skyfill(skyfill, net, dids, tmp / job, job, label, [], args.timeout)
            after = net.stats()
            served[job] = [
                {k: a.get(k, 0) - b.get(k, 0) for k in ("served", "limited")}
                | {"limit": a.get("limit")}
                for a, b in zip(after, before, strict=True)
            ]
    for job, run in runs.items():
        print(f"skyfill {job}: {' '.join(run.command)}")
    _throttled_tables(net, slow, runs, served)


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
    net: Network, slow: int, runs: dict[str, Run], served: dict[str, list[dict]]
) -> None:
    comp = {job: _completion(run, net) for job, run in runs.items()}
    run_a = runs["thr-a"]
    rows = []
    for index, url in enumerate(net.pds):
        a = comp["thr-a"].get(index)
        b1 = comp["thr-b1"].get(index)
        b2 = comp["thr-b2"].get(index)
        best_b = min((b[2] for b in (b1, b2) if b), default=None)
        mine = run_a.host_stats(url)
        rows.append(
            [
                f"{index}{' (throttled)' if index == slow else ''}",
                served["thr-a"][index].get("limit") or "none",
                f"{a[0]}" if a else "-",
                f"{a[1]}" if a else "-",
                f"{a[2]:.2f}" if a else "-",
                f"{b1[2]:.2f}" if b1 else "-",
                f"{b2[2]:.2f}" if b2 else "-",
                f"{a[2] / best_b:.2f}" if a and best_b else "-",
                str(served["thr-a"][index]["served"]),
                str(served["thr-a"][index]["limited"]),
                str(mine.get("rate_limited", "-")),
                str(mine.get("requests", "-")),
            ]
        )
    header = [
        "host",
        "limit",
        "(a) DIDs",
        "ok",
        "(a) done s",
        "(b1) done s",
        "(b2) done s",
        "a / best b",
        "served (a)",
        "429 sent (a)",
        "429 seen (a)",
        "requests (a)",
    ]
    _table(
        "throttled: per-host completion = last fetched_at of the host's DIDs - job start; "
        "(a) all ten hosts, (b1)/(b2) the nine alone before/after (a)",
        header,
        rows,
    )
    rows = []
    rates = {}
    for job, run in runs.items():
        nine = {k: v for k, v in comp[job].items() if k != slow}
        dids = sum(v[0] for v in nine.values())
        last = max(v[2] for v in nine.values())
        rates[job] = dids / last
        rows.append(
            [
                run.label,
                f"{run.seconds:.1f}",
                _statuses(run),
                str(dids),
                f"{last:.2f}",
                f"{rates[job]:.0f}",
            ]
        )
    header = ["run", "elapsed s", "outcome", "nine DIDs", "nine done s", "nine DIDs/s"]
    _table("throttled: the nine unthrottled hosts", header, rows)
    best_b = max(rates["thr-b1"], rates["thr-b2"])
    print(
        f"nine hosts' DIDs/s, (a) / best (b) = {rates['thr-a'] / best_b:.2f} "
        f"(1.00 = throttling host {slow} costs the others nothing)"
    )
    if slow in comp["thr-a"]:
        d, ok, s = comp["thr-a"][slow]
        spec = parse_rate(served["thr-a"][slow]["limit"] or "1/1s")
        print(
            f"host {slow}: {d} DIDs ({ok} ok) done after {s:.1f}s = {d / s:.2f} DIDs/s; "
            f"allowed {spec.per_second:.2f} req/s, so at best ~{d / spec.per_second:.0f}s"
        )
        tries = [r.attempts or 0 for r in run_a.repos if net.host_of(r.did) == slow]
        print(
            f"  attempts per DID of host {slow} (repos.parquet): mean "
            f"{sum(tries) / len(tries):.1f}, max {max(tries)}; tasks of (a), retry phases "
            f"included: {_tasks(run_a)} (b1: {_tasks(runs['thr-b1'])})"
        )
        for repo in run_a.repos:
            if net.host_of(repo.did) == slow and repo.status != "ok":
                print(f"  {repo.did} {repo.status}: {repo.error}")


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
    limited = ["--max-memory", args.max_memory]
    flag_sets = [
        (f"--max-memory {args.max_memory}", limited),
        ("no --max-memory", []),
    ]
    if args.mem_low_concurrency:
        c = str(args.mem_low_concurrency)
        flag_sets.append(
            (f"--max-memory {args.max_memory} --concurrency {c}", [*limited, "--concurrency", c])
        )
    runs = []
    with simnet(tmp / "memory-net", *options) as net:
        print(f"simnet: {' '.join(['python', *net.command[1:]])}")
        for i, (label, flags) in enumerate(flag_sets):
            job = f"mem-{i}"
            run = run_skyfill(
                skyfill,
                net,
                net.dids,
                tmp / job,
                job,
                label,
                flags,
                args.timeout,
                stall_seconds=args.stall_seconds,
            )
            runs.append(run)
            shutil.rmtree(tmp / job / "jobs" / job / "output" / "records", ignore_errors=True)
    repos = net.truth["repos"]
    records = sorted(len(r["records"]) for r in repos.values())
    print(
        f"network: {len(repos)} repos, {sum(records)} records, largest {records[-1]}, "
        f"second {records[-2]}, median {records[len(records) // 2]}"
    )
    for run in runs:
        print(f"skyfill ({run.label}): {' '.join(run.command)}")
    _memory_table(runs, parse_size(args.max_memory), args.max_memory)


def parse_size(text: str) -> int:
    """`300m`, `2g`, `512k`, or bytes (as skyfill reads --max-memory: powers of 1024)."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    text = text.strip().lower().removesuffix("b")
    if text and text[-1] in units:
        return int(float(text[:-1]) * units[text[-1]])
    return int(text)


def _memory_table(runs: list[Run], limit: int, limit_text: str) -> None:
    rows = []
    for run in runs:
        mem = run.status.get("memory", {})
        cars = sorted((r.car_bytes or 0 for r in run.repos if r.status == "ok"), reverse=True)
        last = run.last_fetch()
        if run.repos:
            outcome = _statuses(run)
        else:
            by = run.status.get("by_status", {})
            outcome = ", ".join(f"{k}={v}" for k, v in sorted(by.items())) or "none"
            outcome = f"{run.status.get('status', '?')}: {outcome} of {run.status.get('items')}"
        if run.stalled:
            outcome += " (stalled, stopped)"
        rows.append(
            [
                run.label,
                f"{run.seconds:.1f}",
                outcome,
                _mb(sum(cars)) if cars else "-",
                _mb(cars[0]) if cars else "-",
                _mb(run.peak("tree")),
                _mb(run.peak("tree", until=last)) if last else "-",
                _mb(run.peak("tree", since=last)) if last else "-",
                _mb(run.peak("main")),
                _mb(run.peak("child")),
                _mb(run.samples[-1].tree) if run.samples else "-",
                f"{run.seconds_over(limit):.1f}",
                _mb(mem.get("peak_rss")),
                str(mem.get("waits", "-")),
            ]
        )
    header = [
        "run",
        "elapsed s",
        "outcome",
        "CAR MB ok",
        "largest CAR",
        "peak tree",
        "fetching",
        "after",
        "main",
        "child",
        "end",
        f"s > {limit_text}",
        "skyfill peak",
        "gate waits",
    ]
    _table("memory: RSS of the skyfill run process tree in MB (psutil, every 50 ms)", header, rows)
    print(
        "peak tree = RSS summed over skyfill and its children; fetching / after = peak tree "
        "before / after the last fetched_at (after: task files and aggregation);\n"
        "main = skyfill's own process; child = largest child (a decode worker); "
        "end = tree at the last sample;\n"
        f"s > {limit_text} = seconds the tree spent above the --max-memory limit "
        f"({limit / MB:.1f} MB); "
        'skyfill peak and gate waits from `skyfill status --json` "memory"'
    )
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
    g.add_argument(
        "--mem-low-concurrency",
        type=int,
        default=4,
        help="a third run: --max-memory with --concurrency N (0: skip; default 4)",
    )
    g.add_argument(
        "--stall-seconds",
        type=float,
        default=30.0,
        help="stop a memory run when no DID finished for this long (default 30)",
    )
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

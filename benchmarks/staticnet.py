"""skyfill against the naive SDK loop on staticnet (issue 17's yardstick).

staticnet (`$SKYFILL_SHARED/staticnet`, default ../shared) serves a fake AT Protocol
network (one PLC, N PDS hosts) from precomputed files through nginx on loopback: real
signed repos, fast enough that the client, not the server, is what is measured. This script

1. generates the network into `--data` with staticnet's gen.mjs when the directory has no
   meta.json yet (node from `$SKYFILL_SHARED/refpds/setup.sh`; `--port-base` picked free
   at generation, since the ports are baked into the DID documents); a later run reuses the
   directory and stops with a clear message if one of its ports is taken;
2. serves it with staticnet's start.sh (stopped with stop.sh, also on failure);
3. for each mode in `--modes`, `--repeats` times, alternating, runs the naive loop
   (`$SKYFILL_SHARED/baseline/sdk_backfill.py --workers 1`, the atproto SDK 0.0.73 in a venv
   of its own, made when missing) and skyfill on the same `--dids` DIDs:

   embedded     skyfill run --dids FILE --plc-url PLC --allow-private-network --workdir TMP
                    --progress none --job-id ID --rate-limit 1000000/1s [--skyfill-args ...]
   postgres     the same with --sink postgresql://...: a PostgreSQL started on a free port
                (tests/pgserver.py: initdb into a temporary directory), the database dropped
                and created again before every run
   distributed  a redis-server on a free port (emptied before every run), then
                skyfill submit --state REDIS ... and 2 `skyfill worker --state REDIS --job ID
                --wait-for-job 60` all started at once (the workers wait for the job, as
                workers a scheduler starts beside the submission do); timed from the first
                start until all three have exited (the job completed, aggregation included).
                `--distributed-start after` starts the workers once submit has exited.

`--rate-limit` (default 1000000/1s, never binding) replaces skyfill's courtesy default of
3000 requests / 5 min per host, which staticnet does not need and which would hold every
DID past the 3000th to 10 resolutions/s at the one PLC (`--rate-limit default` keeps it).

Every run is timed from process start to exit (wall), with the CPU seconds (user+sys) of
its process tree and the peak of the tree's summed RSS, both sampled every 50 ms with psutil
(each process counts with its last sample: up to ~50 ms each may be missed). The CPU of
nginx and of the PostgreSQL / Redis server during the run is shown apart.

Exactness: after every skyfill run, for every DID the set of (collection/rkey, cid) in the
output (output/records, hive-partitioned Parquet, or the `records` table) must equal
truth.json's, no other DID may appear, the row count must equal truth's, and each DID's
status (output/repos.parquet or the `repos` table) must be `ok` (or `invalid_repo` where
truth says `bad_signature`, see `--tamper`). The baseline's records.parquet is checked the
same way (records only) on its first run. skyfill verifies commit signatures by default
(`--verify-signatures`); the job manifest's `verify_signatures` is checked to be true.

`--profile` adds one embedded skyfill run under cProfile (the main process only: CARs
above skyfill's inline-decode size are decoded in its decode processes, which the profile
does not see; pass `--skyfill-args "--decode-processes 0"` to keep them in-process) and
prints the top 30 functions by cumulative and by own time.

    PYTHONPATH=src .venv/bin/python benchmarks/staticnet.py                 # 3000 accounts
    PYTHONPATH=src .venv/bin/python benchmarks/staticnet.py --modes postgres,distributed \\
        --repeats 2 --dids 1000 --skyfill-args "--decode-processes 0" --profile

skyfill runs as `--skyfill-python -m skyfill` (default /work/main/.venv/bin/python, else this
python) with this process's environment, PYTHONPATH included, so another src tree can be
measured; PYTHONDONTWRITEBYTECODE is dropped for both sides, so that skyfill's source is not
compiled again in every process of every run (the SDK's installed bytecode is used anyway).
Only 127.0.0.1 is contacted; every server started here is stopped by its PID.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import pstats
import random
import shlex
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pyarrow.dataset as ds
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.pgserver, benchmarks.distributed

from tests.pgserver import PostgresServer, start_postgres  # noqa: E402

from benchmarks.distributed import redis_server  # noqa: E402

MODES = ("embedded", "postgres", "distributed")
SAMPLE_SECONDS = 0.05
DEFAULT_PYTHON = Path("/work/main/.venv/bin/python")
SDK_PACKAGES = ("atproto==0.0.73", "pyarrow")
DISTRIBUTED_WORKERS = 2
UNLIMITED = "1000000/1s"
"""skyfill's --rate-limit here: staticnet has none, and skyfill's default (3000/5m per host,
a window's worth at once) lets through only 3000 DID resolutions at the one PLC before it
waits for the window; in distributed mode slots leased but left unused count too, so even
3000 DIDs waited minutes for the last few resolutions."""
Truth = dict[str, frozenset[tuple[str, str]]]


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _shared() -> Path:
    return Path(os.environ.get("SKYFILL_SHARED", ROOT.parent / "shared")).resolve()


# -- ports -----------------------------------------------------------------------------------


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def pick_port_base(count: int) -> int:
    """A base port whose `count` consecutive ports are free on 127.0.0.1."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(20000, 60000 - count)
        if all(_port_free(base + i) for i in range(count)):
            return base
    raise SystemExit(f"no {count} consecutive free ports found between 20000 and 60000")


# -- the network -----------------------------------------------------------------------------


@dataclass(slots=True)
class Staticnet:
    data: Path
    meta: dict

    @property
    def plc(self) -> str:
        return self.meta["plc_url"]

    @property
    def ports(self) -> list[int]:
        return [self.meta["plc_port"], *(h["port"] for h in self.meta["hosts"])]

    def dids(self, limit: int | None) -> list[str]:
        lines = (self.data / "dids.txt").read_text().splitlines()
        return [d.strip() for d in lines if d.strip()][:limit]

    def truth(self, dids: list[str]) -> tuple[Truth, dict[str, str]]:
        """Per DID the set of (collection/rkey, cid), and truth's status."""
        repos = json.loads((self.data / "truth.json").read_text())["repos"]
        records = {d: frozenset((r["path"], r["cid"]) for r in repos[d]["records"]) for d in dids}
        return records, {d: repos[d].get("status", "ok") for d in dids}


def node_binary(shared: Path) -> str:
    """The node that resolves @atproto/*: $REFPDS_NODE, else what refpds/setup.sh (which
    installs it when missing) prints."""
    if os.environ.get("REFPDS_NODE"):
        return os.environ["REFPDS_NODE"]
    done = subprocess.run(
        ["bash", str(shared / "refpds" / "setup.sh")], capture_output=True, text=True, check=False
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        raise SystemExit(f"refpds/setup.sh failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return lines[-1]


def generate(args: argparse.Namespace, shared: Path, data: Path) -> None:
    node = node_binary(shared)
    base = args.port_base or pick_port_base(args.hosts + 1)
    cmd = [node, str(shared / "staticnet" / "gen.mjs"), "--out", str(data)]
    cmd += ["--accounts", str(args.accounts), "--hosts", str(args.hosts)]
    cmd += ["--big", str(args.big), "--port-base", str(base)]
    if args.tamper:
        cmd += ["--tamper", str(args.tamper)]
    data.mkdir(parents=True, exist_ok=True)
    _log(f"generating staticnet: {shlex.join(cmd)}")
    started = time.perf_counter()
    with open(data / "bench-gen.log", "wb") as log:
        proc = psutil.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
        cpu, peak = watch([proc], float("inf"))
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"gen.mjs exited {proc.returncode}; see {data / 'bench-gen.log'}")
    facts = {"wall_s": round(seconds, 1), "cpu_s": round(cpu, 1), "peak_rss": peak, "cmd": cmd}
    (data / "bench-gen.json").write_text(json.dumps(facts, indent=1))


def open_network(args: argparse.Namespace, shared: Path) -> Staticnet:
    data = Path(args.data or f"/tmp/skyfill-staticnet-{args.accounts}").resolve()
    if not (data / "meta.json").exists():
        generate(args, shared, data)
    net = Staticnet(data, json.loads((data / "meta.json").read_text()))
    if net.meta["accounts"] != args.accounts:
        _log(f"note: {data} holds {net.meta['accounts']} accounts (not --accounts {args.accounts})")
    taken = [p for p in net.ports if not _port_free(p)]
    if taken:
        raise SystemExit(
            f"ports {taken} of {data} are taken (they are baked into its DID documents): "
            f"stop what listens there (a staticnet left running: stop.sh {data}), "
            "or use another --data to generate a network on free ports"
        )
    return net


@contextlib.contextmanager
def serving(shared: Path, net: Staticnet) -> Iterator[int]:
    """nginx (staticnet/start.sh) for the data dir; stop.sh (and the PID) at the end."""
    scripts = shared / "staticnet"
    try:
        done = subprocess.run(
            ["bash", str(scripts / "start.sh"), str(net.data)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"start.sh failed:\n{done.stdout}{done.stderr}")
        _log(done.stdout.strip())
        yield int((net.data / "run" / "master.pid").read_text())
    finally:
        pid_file = net.data / "run" / "master.pid"
        pid = int(pid_file.read_text()) if pid_file.exists() else None
        subprocess.run(["bash", str(scripts / "stop.sh"), str(net.data)], check=False)
        if pid is not None and psutil.pid_exists(pid):
            with contextlib.suppress(psutil.Error):
                psutil.Process(pid).kill()


# -- running and measuring -------------------------------------------------------------------


def _tree_cpu(pid: int | None) -> float:
    """User+sys CPU seconds of a server's process tree (0 if gone): its live processes', and
    those of the children they have reaped (PostgreSQL's backends end with their
    connection; the postmaster reaps them)."""
    if pid is None:
        return 0.0
    total = 0.0
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
    return total


def child_env() -> dict[str, str]:
    """This environment, less PYTHONDONTWRITEBYTECODE: with it every skyfill process (and
    each of its decode processes) compiles all its modules from source at every start,
    while the baseline's pip-installed SDK has its bytecode; a user's install has both."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def watch(procs: list[psutil.Popen], deadline: float) -> tuple[float, int]:
    """Wait for `procs`; return the CPU seconds of their trees and the peak summed RSS.

    Every SAMPLE_SECONDS each process of each tree is sampled; a process counts with its
    last sample. Past `deadline` (time.monotonic) the processes are killed.
    """
    cpu: dict[int, float] = {}
    peak = 0
    try:
        while any(p.poll() is None for p in procs):
            peak = max(peak, _sample(procs, cpu))
            if time.monotonic() > deadline:
                _log("timeout: killing the run")
                _kill(procs)
            time.sleep(SAMPLE_SECONDS)
    except BaseException:  # Ctrl-C, an error: leave no process behind
        _kill(procs)
        raise
    return sum(cpu.values()), peak


def _sample(procs: list[psutil.Popen], cpu: dict[int, float]) -> int:
    """Record each process's CPU seconds in `cpu`; return the trees' summed RSS."""
    rss = 0
    for root in procs:
        with contextlib.suppress(psutil.Error):
            for p in [root, *root.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    t = p.cpu_times()
                    cpu[p.pid] = t.user + t.system
                    rss += p.memory_info().rss
    return rss


def _kill(procs: list[psutil.Popen]) -> None:
    """Kill each process and its children (by PID), and reap them."""
    for root in procs:
        with contextlib.suppress(psutil.Error):
            for p in [*root.children(recursive=True), root]:
                with contextlib.suppress(psutil.Error):
                    p.kill()
    for root in procs:
        with contextlib.suppress(psutil.Error):
            root.wait(10)


@dataclass(slots=True)
class Run:
    seconds: float
    cpu: float
    peak_rss: int
    records: int
    server_cpu: float = 0.0
    """nginx + the PostgreSQL / Redis server during the run."""
    check: str = ""
    note: str = ""


def run_commands(
    steps: list[list[list[str]]], logs: Path, timeout: float, servers: list[int | None]
) -> Run:
    """Run each step's commands together, the steps one after the other; time them all.

    Raises SystemExit (with the log's tail) when a process exits non-zero."""
    before = sum(_tree_cpu(pid) for pid in servers)
    deadline = time.monotonic() + timeout
    cpu = 0.0
    peak = 0
    started = time.perf_counter()
    for s, commands in enumerate(steps):
        paths = [logs.with_suffix(f".{s}.{k}.log") for k in range(len(commands))]
        files = [open(p, "wb") for p in paths]  # noqa: SIM115 (closed below)
        try:
            procs = [
                psutil.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, env=child_env())
                for cmd, f in zip(commands, files, strict=True)
            ]
            step_cpu, step_peak = watch(procs, deadline)
        finally:
            for f in files:
                f.close()
        cpu += step_cpu
        peak = max(peak, step_peak)
        for cmd, proc, path in zip(commands, procs, paths, strict=True):
            if proc.returncode != 0:
                raise SystemExit(
                    f"exit {proc.returncode}: {shlex.join(cmd)}\n{path.read_text()[-3000:]}"
                )
    seconds = time.perf_counter() - started
    server_cpu = sum(_tree_cpu(pid) for pid in servers) - before
    return Run(seconds, cpu, peak, records=0, server_cpu=server_cpu)


# -- exactness -------------------------------------------------------------------------------


def compare(
    truth: Truth,
    rows: Iterable[tuple[str, str, str, str]],
    statuses: dict[str, str] | None = None,
    truth_status: dict[str, str] | None = None,
) -> tuple[str, int]:
    """`exact` or `MISMATCH n` (DIDs whose records or status differ, plus DIDs not asked
    for), and the number of rows read."""
    got: dict[str, set[tuple[str, str]]] = collections.defaultdict(set)
    count = 0
    for did, collection, rkey, cid in rows:
        got[did].add((f"{collection}/{rkey}", cid))
        count += 1
    bad = {d for d, expected in truth.items() if got.get(d, set()) != expected}
    bad |= set(got) - set(truth)
    if statuses is not None and truth_status is not None:
        wanted = {"ok": "ok", "bad_signature": "invalid_repo"}
        bad |= {d for d, s in truth_status.items() if statuses.get(d) != wanted.get(s, s)}
        bad |= set(statuses) - set(truth)
    expected_rows = sum(len(v) for v in truth.values())
    if not bad and count != expected_rows:
        return f"MISMATCH rows {count} != {expected_rows}", count
    return ("exact" if not bad else f"MISMATCH {len(bad)}"), count


def parquet_rows(path: Path) -> Iterator[tuple[str, str, str, str]]:
    columns = ["did", "collection", "rkey", "cid"]
    if path.is_dir():
        table = ds.dataset(path, format="parquet", partitioning="hive").to_table(columns=columns)
    else:
        table = pq.read_table(path, columns=columns)
    data = table.to_pydict()
    return zip(*(data[c] for c in columns), strict=True)


def parquet_statuses(path: Path) -> dict[str, str]:
    data = pq.read_table(path, columns=["did", "status"]).to_pydict()
    return dict(zip(data["did"], data["status"], strict=True))


def postgres_output(url: str) -> tuple[list[tuple[str, str, str, str]], dict[str, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT did, collection, rkey, cid FROM records").fetchall()
        statuses = dict(conn.execute("SELECT did, status FROM repos").fetchall())
    return rows, statuses


# -- the two sides ---------------------------------------------------------------------------


def sdk_python(venv: Path) -> str:
    """The baseline's python: a venv with the atproto SDK, made when missing."""
    python = venv / "bin" / "python"
    if (venv / ".bench-ready").exists():
        return str(python)
    _log(f"making the baseline's venv {venv}: pip install {' '.join(SDK_PACKAGES)}")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", *SDK_PACKAGES],
        check=True,
        stdout=subprocess.DEVNULL,
    )
    (venv / ".bench-ready").touch()
    return str(python)


@dataclass(slots=True)
class Context:
    args: argparse.Namespace
    shared: Path
    net: Staticnet
    nginx: int
    dids: list[str]
    dids_file: Path
    truth: Truth
    truth_status: dict[str, str]
    work: Path
    skyfill: list[str]
    sdk: str
    runs: int = 0
    baseline_checked: bool = False
    phases: list[dict] = field(default_factory=list)

    def job_id(self, label: str) -> str:
        self.runs += 1
        return f"{label}-{self.runs}"

    def skyfill_flags(self, job_id: str) -> list[str]:
        flags = ["--dids", str(self.dids_file), "--plc-url", self.net.plc]
        flags += ["--allow-private-network", "--workdir", str(self.work), "--job-id", job_id]
        if self.args.rate_limit != "default":
            flags += ["--rate-limit", self.args.rate_limit]
        return flags + shlex.split(self.args.skyfill_args)


def run_baseline(ctx: Context) -> Run:
    job = ctx.job_id("baseline")
    out = ctx.work / job
    script = ctx.shared / "baseline" / "sdk_backfill.py"
    cmd = [ctx.sdk, str(script), "--dids", str(ctx.dids_file), "--plc-url", ctx.net.plc]
    cmd += ["--out", str(out), "--workers", "1"]
    run = run_commands([[cmd]], ctx.work / job, ctx.args.timeout, [ctx.nginx])
    summary = json.loads((out / "summary.json").read_text())
    run.records = summary["records"]
    if summary["dids_failed"]:
        run.note = f"{summary['dids_failed']} DIDs failed"
    ctx.phases.append(summary["per_did_sum_s"] | {"wall_s": summary["wall_s"]})
    if not ctx.baseline_checked:
        run.check, _ = compare(ctx.truth, parquet_rows(out / "records.parquet"))
        ctx.baseline_checked = True
    shutil.rmtree(out, ignore_errors=True)
    return run


def _verified(job_dir: Path) -> bool:
    if not (job_dir / "manifest.json").exists():
        return False
    manifest = json.loads((job_dir / "manifest.json").read_text())
    config = manifest.get("config", manifest)
    return bool(config.get("verify_signatures"))


def _check_parquet(ctx: Context, job_dir: Path, run: Run) -> None:
    output = job_dir / "output"
    if not (output / "repos.parquet").exists():
        run.check = "NO OUTPUT"
        return
    statuses = parquet_statuses(output / "repos.parquet")
    run.check, run.records = compare(
        ctx.truth, parquet_rows(output / "records"), statuses, ctx.truth_status
    )


def run_embedded(ctx: Context) -> Run:
    job = ctx.job_id("embedded")
    cmd = [*ctx.skyfill, "run", *ctx.skyfill_flags(job), "--progress", "none"]
    run = run_commands([[cmd]], ctx.work / job, ctx.args.timeout, [ctx.nginx])
    _finish_job(ctx, job, run, lambda: _check_parquet(ctx, ctx.work / "jobs" / job, run))
    return run


def _finish_job(ctx: Context, job: str, run: Run, check: Callable[[], None]) -> None:
    job_dir = ctx.work / "jobs" / job
    check()
    if not _verified(job_dir):
        run.note = "SIGNATURES NOT VERIFIED"
    shutil.rmtree(job_dir, ignore_errors=True)


def make_postgres(ctx: Context, server: PostgresServer) -> Callable[[], Run]:
    def run_postgres() -> Run:
        url = server.create_database("bench")
        job = ctx.job_id("postgres")
        cmd = [*ctx.skyfill, "run", *ctx.skyfill_flags(job), "--progress", "none"]
        cmd += ["--sink", url]
        pid = server.process.pid
        run = run_commands([[cmd]], ctx.work / job, ctx.args.timeout, [ctx.nginx, pid])

        def check() -> None:
            rows, statuses = postgres_output(url)
            run.check, run.records = compare(ctx.truth, rows, statuses, ctx.truth_status)

        _finish_job(ctx, job, run, check)
        return run

    return run_postgres


def make_distributed(ctx: Context, redis_url: str, redis_pid: int) -> Callable[[], Run]:
    import redis

    def run_distributed() -> Run:
        with contextlib.closing(redis.Redis.from_url(redis_url)) as client:
            client.flushdb()  # host budgets live in Redis, shared by every job on it
        job = ctx.job_id("distributed")
        submit = [*ctx.skyfill, "submit", "--state", redis_url, *ctx.skyfill_flags(job)]
        worker = [*ctx.skyfill, "worker", "--state", redis_url, "--job", job]
        workers = [
            [*worker, "--worker-id", f"w{k}", "--progress", "none"]
            for k in range(1, DISTRIBUTED_WORKERS + 1)
        ]
        if ctx.args.distributed_start == "after":
            steps = [[submit], workers]
        else:
            steps = [[submit, *[[*w, "--wait-for-job", "60"] for w in workers]]]
        servers = [ctx.nginx, redis_pid]
        run = run_commands(steps, ctx.work / job, ctx.args.timeout, servers)
        status = _status(ctx, job, redis_url)
        _finish_job(ctx, job, run, lambda: _check_parquet(ctx, ctx.work / "jobs" / job, run))
        if status != "completed":
            run.note = f"job {status}"
        return run

    return run_distributed


def _status(ctx: Context, job: str, redis_url: str) -> str:
    """The job's status as `skyfill status --json` says it."""
    cmd = [*ctx.skyfill, "status", job, "--state", redis_url, "--json"]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    try:
        return str(json.loads(done.stdout).get("status"))
    except json.JSONDecodeError:
        return f"unknown ({done.stderr.strip()[-200:]})"


# -- the table -------------------------------------------------------------------------------


@dataclass(slots=True)
class Series:
    label: str
    runs: list[Run] = field(default_factory=list)

    @property
    def best(self) -> Run:
        return min(self.runs, key=lambda r: r.seconds)

    @property
    def median(self) -> float:
        return statistics.median(r.seconds for r in self.runs)


def _ratio(a: Series, b: Series) -> tuple[float, float]:
    """(best vs best, median vs median) of a's DIDs/s over b's (= b's time over a's)."""
    return b.best.seconds / a.best.seconds, b.median / a.median


def print_table(title: str, dids: int, rows: list[Series], base: Series) -> None:
    header = [
        "side",
        "runs",
        "best s",
        "med s",
        "DIDs",
        "records",
        "DIDs/s best",
        "DIDs/s med",
        "rec/s best",
        "cpu s",
        "srv cpu",
        "peak MB",
        "x base best",
        "x base med",
        "check",
    ]
    table = []
    for s in rows:
        r = s.best
        ratio = _ratio(s, base)
        checks = [x.check for x in s.runs if x.check]
        check = "exact" if checks and all(c == "exact" for c in checks) else ", ".join(checks)
        notes = sorted({x.note for x in s.runs if x.note})
        table.append(
            [
                s.label,
                str(len(s.runs)),
                f"{r.seconds:.2f}",
                f"{s.median:.2f}",
                str(dids),
                str(r.records),
                f"{dids / r.seconds:.1f}",
                f"{dids / s.median:.1f}",
                f"{r.records / r.seconds:,.0f}",
                f"{r.cpu:.1f}",
                f"{r.server_cpu:.1f}",
                f"{r.peak_rss / 1e6:.0f}",
                f"{ratio[0]:.2f}",
                f"{ratio[1]:.2f}",
                " ".join([check or "-", *notes]),
            ]
        )
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    line = "  ".join(f"{h:>{w}}" for h, w in zip(header, widths, strict=True))
    print(f"\n{title}", flush=True)
    print(line)
    print("-" * len(line))
    for row in table:
        print("  ".join(f"{c:>{w}}" for c, w in zip(row, widths, strict=True)), flush=True)


# -- modes -----------------------------------------------------------------------------------


def alternate(ctx: Context, label: str, run_skyfill: Callable[[], Run], repeats: int) -> Series:
    """Baseline and skyfill, alternating (the order flipped every other repeat)."""
    base, ours = Series("baseline sdk w=1"), Series(label)
    for repeat in range(repeats):
        order = [(base, lambda: run_baseline(ctx)), (ours, run_skyfill)]
        for series, fn in order if repeat % 2 == 0 else order[::-1]:
            run = fn()
            series.runs.append(run)
            _log(
                f"[{repeat + 1}/{repeats}] {series.label}: {run.seconds:.2f}s, cpu {run.cpu:.1f}s,"
                f" {run.records} records {run.check} {run.note}"
            )
    title = (
        f"{label}: {len(ctx.dids)} DIDs, {sum(len(v) for v in ctx.truth.values())} records in "
        f"truth; best of {repeats}; load average {_load()}"
    )
    print_table(title, len(ctx.dids), [base, ours], base)
    return ours


def run_modes(ctx: Context) -> None:
    args = ctx.args
    results: dict[str, Series] = {}
    for mode in args.modes.split(","):
        if mode == "embedded":
            results[mode] = alternate(ctx, "skyfill run", lambda: run_embedded(ctx), args.repeats)
        elif mode == "postgres":
            server = start_postgres(
                {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
                if args.pg_durable
                else None
            )
            try:
                fn = make_postgres(ctx, server)
                results[mode] = alternate(ctx, "skyfill run --sink postgresql", fn, args.repeats)
            finally:
                server.stop()
        elif mode == "distributed":
            with redis_server(ctx.work / "redis") as server:
                fn = make_distributed(ctx, server.url, server.pid)
                label = f"skyfill submit + {DISTRIBUTED_WORKERS} workers ({args.distributed_start})"
                results[mode] = alternate(ctx, label, fn, args.repeats)
        else:
            raise SystemExit(f"unknown mode {mode!r} (one of {', '.join(MODES)})")
    embedded = results.get("embedded")
    for mode in ("postgres", "distributed"):
        if embedded is not None and mode in results:
            best, median = _ratio(results[mode], embedded)
            print(f"{mode} / embedded (DIDs/s): best {best:.2f}, median {median:.2f}")


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


# -- profile ---------------------------------------------------------------------------------


def profile(ctx: Context) -> None:
    job = ctx.job_id("profile")
    out = ctx.work / f"{job}.prof"
    cmd = [*ctx.skyfill[:-2], "-m", "cProfile", "-o", str(out), "-m", "skyfill"]
    cmd += ["run", *ctx.skyfill_flags(job), "--progress", "none"]
    run = run_commands([[cmd]], ctx.work / job, ctx.args.timeout, [ctx.nginx])
    _finish_job(ctx, job, run, lambda: _check_parquet(ctx, ctx.work / "jobs" / job, run))
    print(
        f"\nprofile: one embedded run under cProfile (the main thread of the main process "
        f"only): {run.seconds:.2f}s wall, {run.cpu:.1f} cpu-s, {run.check}"
    )
    # By cumulative time only skyfill's own functions: the top is otherwise runpy, click and
    # asyncio frames that enclose everything.
    for key, only, what in (("cumulative", "skyfill/", "skyfill's functions"), ("tottime", "", "")):
        text = io.StringIO()
        pstats.Stats(str(out), stream=text).sort_stats(key).print_stats(only, 30)
        body = text.getvalue()
        start = body.find("   ncalls")
        body = body[start:] if start >= 0 else body
        for path in sys.path:
            if path.startswith("/") and len(path) > 1:
                body = body.replace(path.rstrip("/") + "/", "")
        print(f"\ntop 30 by {key}{f' ({what})' if what else ''}:\n{body.rstrip()}")
    if ctx.args.profile_out:
        shutil.copy(out, ctx.args.profile_out)


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python benchmarks/staticnet.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", help="staticnet data dir (default /tmp/skyfill-staticnet-ACCOUNTS)")
    p.add_argument("--accounts", type=int, default=3000, help="gen.mjs --accounts")
    p.add_argument("--hosts", type=int, default=8, help="gen.mjs --hosts")
    p.add_argument("--big", type=int, default=3, help="gen.mjs --big (25k-record repos)")
    p.add_argument("--tamper", type=int, default=0, help="gen.mjs --tamper (bad signatures)")
    p.add_argument("--port-base", type=int, default=0, help="gen.mjs --port-base (0: free)")
    p.add_argument("--dids", type=int, default=None, help="first N DIDs of dids.txt (all)")
    p.add_argument("--modes", default="embedded", help=f"comma list of {', '.join(MODES)}")
    p.add_argument("--repeats", type=int, default=3, help="runs per side and mode")
    p.add_argument(
        "--rate-limit",
        default=UNLIMITED,
        help="skyfill --rate-limit per host (default %(default)s: staticnet has no limits; "
        "'default' keeps skyfill's 3000/5m, which binds at the PLC)",
    )
    p.add_argument("--skyfill-args", default="", help="extra flags for skyfill run / submit")
    p.add_argument(
        "--skyfill-python",
        default=str(DEFAULT_PYTHON) if DEFAULT_PYTHON.exists() else sys.executable,
        help="python that runs `-m skyfill` (default %(default)s; PYTHONPATH is passed on)",
    )
    p.add_argument(
        "--baseline-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "skyfill-staticnet-sdk-venv",
        help="venv with atproto==0.0.73 + pyarrow for sdk_backfill.py (made when missing)",
    )
    p.add_argument("--pg-durable", action="store_true", help="PostgreSQL with fsync on")
    p.add_argument(
        "--distributed-start",
        choices=("together", "after"),
        default="together",
        help="distributed: workers started with submit (waiting for the job) or after it",
    )
    p.add_argument("--profile", action="store_true", help="one extra run under cProfile")
    p.add_argument("--profile-out", type=Path, help="keep the profile's .prof file here")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per run at most")
    p.add_argument("--keep", action="store_true", help="keep the run logs (their path is printed)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    shared = _shared()
    started = time.perf_counter()
    net = open_network(args, shared)
    gen = net.data / "bench-gen.json"
    generated = json.loads(gen.read_text()) if gen.exists() else {}
    meta = net.meta
    print(
        f"staticnet {net.data}: {meta['accounts']} accounts on {len(meta['hosts'])} hosts, "
        f"{meta['records']} records, {meta['car_bytes'] / 1e6:.1f} MB of CAR, "
        f"records/repo {json.dumps(meta['records_per_repo'])}; generated in "
        f"{meta['generated_s']:.1f}s (gen.mjs) / {generated.get('wall_s', '?')}s wall, "
        f"{generated.get('cpu_s', '?')} cpu-s; PLC {net.plc}",
        flush=True,
    )
    sdk = sdk_python(args.baseline_venv)
    work = Path(tempfile.mkdtemp(prefix="skyfill-bench-staticnet-"))
    try:
        with serving(shared, net) as nginx:
            dids = net.dids(args.dids)
            dids_file = work / "dids.txt"
            dids_file.write_text("".join(f"{d}\n" for d in dids))
            truth, truth_status = net.truth(dids)
            ctx = Context(
                args=args,
                shared=shared,
                net=net,
                nginx=nginx,
                dids=dids,
                dids_file=dids_file,
                truth=truth,
                truth_status=truth_status,
                work=work,
                skyfill=[args.skyfill_python, "-m", "skyfill"],
                sdk=sdk,
            )
            print(
                f"{len(dids)} DIDs; skyfill: {shlex.join(ctx.skyfill)} "
                f"(PYTHONPATH={os.environ.get('PYTHONPATH', '')}) "
                f"extra args {args.skyfill_args!r}; {os.cpu_count()} cpus",
                flush=True,
            )
            run_modes(ctx)
            print_phases(ctx.phases)
            if args.profile:
                profile(ctx)
    finally:
        if args.keep:
            _log(f"logs kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(
        "\ntimes: wall, process start to exit (distributed: the first start to the last exit "
        "of submit and the workers);\ncpu s = user+sys of the client's process tree (sampled, "
        "best run); "
        "srv cpu = nginx (+ PostgreSQL or Redis) during the best run; peak MB = highest summed "
        "RSS of the client's tree (sampled);\nx base = DIDs/s over the baseline's of the same "
        "mode (best vs best, median vs median); check = output vs truth.json (baseline: "
        "first run only)"
    )
    print(f"total wall time {time.perf_counter() - started:.0f}s")


def print_phases(phases: list[dict]) -> None:
    """What the baseline spends per DID, summed over its DIDs (its own timers)."""
    if not phases:
        return
    keys = [k for k in phases[0] if k != "wall_s"]
    parts = ", ".join(f"{k} {statistics.median(p[k] for p in phases):.2f}s" for k in keys)
    wall = statistics.median(p["wall_s"] for p in phases)
    print(f"\nbaseline per-DID split (median of {len(phases)} runs, its wall {wall:.2f}s): {parts}")


if __name__ == "__main__":
    main()

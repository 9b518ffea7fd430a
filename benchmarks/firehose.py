"""Firehose consumer benchmark: `skyfill firehose` into SQLite, PostgreSQL and a Parquet event
log, with signature verification on and off, against the baseline atproto SDK consumer
(`../shared/baseline/sdk_firehose.py`, into SQLite), on the same recorded stream, in one run.

The stream is a recording of real signed commits (`../shared/staticnet/firehose.mjs`,
cached under $TMPDIR/skyfill-fh-cache by its inputs) served by fhserve.py as fast as it is
read, with a PLC for its DID documents (tests/firehose/recording.py). Each run replays it
from cursor 0 to the head into a fresh sink:
  sqlite    a new SQLite file
  postgres  a new database (CREATE DATABASE per run) on one PostgreSQL server started for
            the benchmark as the tests start theirs (tests/pgserver.py: a temporary
            directory, a free loopback port, fsync/synchronous_commit/full_page_writes off
            unless --durable) and stopped at the end
  parquet   a new directory (the append-only event log), then `skyfill firehose compact`
            into current tables (after the timed run, not timed; its seconds are printed)
Every skyfill sink runs with verification on (the default) and with
`--no-verify-signatures` (`--verify both|on|off`). The series run round-robin, the order
rotated each round, so every ratio comes from runs made side by side.

Each run's output is compared with the recording's truth (records, handles, statuses;
tests/firehose/truth.py). Per series, from the best run (highest events/s = frames / wall):
  wall s             from starting the consumer to its exit (the output check is not timed)
  cpu s              the consumer's user+system CPU from wait4: its own and that of the
                     children it reaped (the decode workers), as Linux's wait4 counts them
  workers cpu s      of that, the reaped children's part (cutime+cstime in /proc, read
                     after it exited, before it is reaped)
  max RSS MB         the largest peak RSS of one process (consumer or a worker): its
                     VmHWM in /proc, last read at most SAMPLE_SECONDS before it ended.
                     (Not wait4's ru_maxrss: Linux keeps there the RSS of the process that
                     forked it, this benchmark, with the truth loaded.)
  tree RSS MB        peak of the summed RSS of the consumer and its descendants (sampled
                     from /proc every SAMPLE_SECONDS)
  fhserve / pg cpu s the servers' CPU during the run (they share the cores); the PostgreSQL
                     server's is its postmaster with all its processes
  exact runs, x sdk  runs equal to the truth; best events/s over the SDK's best.
The workers' CPU is checked: the CPU /proc showed for the consumer's descendants during a
run must be within the reaped children's (else a worker was not reaped and cpu s misses it).

    .venv/bin/python -m benchmarks.firehose [--accounts 500 --events 20000] [--repeat 3]
        [--sinks sqlite,postgres,parquet] [--verify both|on|off] [--no-baseline]
        [--skyfill-arg=--decode-workers=0 ...] [--durable]

The issue 15 measurement (>=100k commit events, every sink, verification on and off, the
SDK alternating; the recording is cached once generated):

    .venv/bin/python -m benchmarks.firehose --accounts 2000 --events 100000 --repeat 3 \
        --skyfill-arg=--progress --skyfill-arg=none

The baseline needs the `atproto` SDK (0.0.73, the version ../shared/staticnet/README.md
measured), installed once into a venv of its own under --workdir. Until `skyfill firehose`
exists (its --help fails), only the baseline runs.
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
from psycopg import sql
from tests.firehose.recording import (
    REPO_ROOT,
    RecordingSpec,
    ServedRecording,
    cached_recording,
    served,
    shared_dir,
)
from tests.firehose.truth import compare_sink, compare_sqlite
from tests.pgserver import PostgresServer, start_postgres

SDK_VERSION = "0.0.73"
RUN_TIMEOUT = 1800
COMPACT_TIMEOUT = 900
SAMPLE_SECONDS = 0.5
SINKS = ("sqlite", "postgres", "parquet")
VERIFY = {"both": (True, False), "on": (True,), "off": (False,)}
DURABLE = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
TICK = os.sysconf("SC_CLK_TCK")
PAGE_MB = os.sysconf("SC_PAGE_SIZE") / 2**20


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    """wait4: the consumer and the children it reaped."""
    workers_cpu_s: float
    """The reaped children's part of cpu_s."""
    seen_cpu_s: float
    """CPU of the consumer's descendants last seen in /proc while it ran."""
    max_rss_mb: float
    """The largest VmHWM of the consumer or one of its descendants."""
    tree_rss_mb: float
    server_cpu_s: float
    pg_cpu_s: float | None
    exit_code: int
    mismatches: list[str]
    compact_s: float | None = None


@dataclass
class Series:
    label: str
    sink: str
    """sqlite, postgres, parquet, or sdk (the baseline, into SQLite)."""
    verify: bool = True
    runs: list[Run] = field(default_factory=list)

    def best(self, frames: int) -> Run:
        return max(self.runs, key=lambda r: frames / r.wall_s)


@dataclass
class Bench:
    """What every run needs: the served stream, the PostgreSQL server, scratch space."""

    fh: ServedRecording
    scratch: Path
    skyfill: Path
    extra: list[str]
    sdk_python: Path | None
    pg: PostgresServer | None
    databases: itertools.count[int] = field(default_factory=itertools.count)


# -- /proc ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stat:
    ppid: int
    cpu_s: float
    """utime + stime."""
    children_cpu_s: float
    """cutime + cstime: the children it has reaped."""
    rss_mb: float


def _stat(pid: int) -> Stat | None:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            parts = stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None  # gone
    cpu = (int(parts[11]) + int(parts[12])) / TICK
    return Stat(
        int(parts[1]), cpu, (int(parts[13]) + int(parts[14])) / TICK, int(parts[21]) * PAGE_MB
    )


def _hwm_mb(pid: int) -> float | None:
    """Peak RSS of a live process (VmHWM; None when gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _processes() -> dict[int, Stat]:
    table = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit() and (stat := _stat(int(entry.name))) is not None:
            table[int(entry.name)] = stat
    return table


def _descendants(table: dict[int, Stat], root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for pid, stat in table.items():
        children.setdefault(stat.ppid, []).append(pid)
    found, todo = [], [root]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def _tree_cpu(root: int) -> float:
    """CPU seconds of `root`, of the children it reaped and of its live descendants."""
    table = _processes()
    tree = [table[pid] for pid in _descendants(table, root) if pid in table]
    own = table.get(root) or _stat(root)
    base = own.cpu_s + own.children_cpu_s if own else 0.0
    return base + sum(s.cpu_s + s.children_cpu_s for s in tree)


class TreeSampler(threading.Thread):
    """Every SAMPLE_SECONDS: the summed RSS of a process and its descendants, the CPU last
    seen of each descendant; kills the process after RUN_TIMEOUT."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss_mb = 0.0
        self.hwm_mb: dict[int, float] = {}
        self.seen_cpu: dict[int, float] = {}
        self._done = threading.Event()
        self._t0 = time.monotonic()

    def run(self) -> None:
        while not self._done.wait(SAMPLE_SECONDS):
            self.sample()
            if time.monotonic() - self._t0 > RUN_TIMEOUT:
                os.kill(self.pid, signal.SIGKILL)

    def sample(self) -> None:
        table = _processes()
        tree = _descendants(table, self.pid)
        rss = sum(table[pid].rss_mb for pid in [self.pid, *tree] if pid in table)
        self.peak_rss_mb = max(self.peak_rss_mb, rss)
        for pid in tree:
            self.seen_cpu[pid] = table[pid].cpu_s + table[pid].children_cpu_s
        for pid in [self.pid, *tree]:
            if (hwm := _hwm_mb(pid)) is not None:
                self.hwm_mb[pid] = hwm

    def stop(self) -> float:
        """Stops sampling; returns the descendants' CPU seen."""
        self._done.set()
        if self.ident is not None:  # started
            self.join()
        return sum(self.seen_cpu.values())


# -- one timed run ----------------------------------------------------------------------------


def _timed(command: list[str], log: Path, bench: Bench) -> Run:
    """Run `command` to its exit and measure it (no output check yet: mismatches empty)."""
    pg_pid = bench.pg.process.pid if bench.pg else None
    pg_before = _tree_cpu(pg_pid) if pg_pid else 0.0
    server_before = _tree_cpu(bench.fh.pid)
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    sampler = TreeSampler(process.pid)
    try:
        sampler.start()
        os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOWAIT)  # exited, not reaped yet
    except BaseException:
        process.kill()
        process.wait()
        raise
    finally:
        wall = time.perf_counter() - started
        seen = sampler.stop()
    zombie = _stat(process.pid)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = code = os.waitstatus_to_exitcode(status)
    return Run(
        wall_s=wall,
        cpu_s=usage.ru_utime + usage.ru_stime,
        workers_cpu_s=zombie.children_cpu_s if zombie else float("nan"),
        seen_cpu_s=seen,
        max_rss_mb=max(sampler.hwm_mb.values(), default=float("nan")),
        tree_rss_mb=sampler.peak_rss_mb,
        server_cpu_s=_tree_cpu(bench.fh.pid) - server_before,
        pg_cpu_s=_tree_cpu(pg_pid) - pg_before if pg_pid else None,
        exit_code=code,
        mismatches=[],
    )


def _exit_lines(run: Run, log: Path) -> list[str]:
    return [f"exit {run.exit_code}: {log.read_text()[-600:]}"] if run.exit_code else []


def skyfill_command(bench: Bench, sink: str, verify: bool) -> list[str]:
    workdir = bench.scratch / "wd"
    shutil.rmtree(workdir, ignore_errors=True)
    fh = bench.fh
    return [
        str(bench.skyfill), "firehose", "--from-host", fh.host_url, "--sink", sink,
        "--workdir", str(workdir), "--cursor", "0", "--until-live", "--plc-url", fh.plc_url,
        "--allow-private-network", *([] if verify else ["--no-verify-signatures"]), *bench.extra,
    ]  # fmt: skip


def _skyfill_run(bench: Bench, sink: str, verify: bool) -> Run:
    log = bench.scratch / "skyfill.log"
    run = _timed(skyfill_command(bench, sink, verify), log, bench)
    run.mismatches = _exit_lines(run, log)
    return run


def run_sqlite(bench: Bench, verify: bool) -> Run:
    db = bench.scratch / "skyfill.db"
    db.unlink(missing_ok=True)
    run = _skyfill_run(bench, f"sqlite:///{db}", verify)
    found = compare_sink(f"sqlite:///{db}", bench.fh.truth) if db.exists() else ["no output"]
    run.mismatches += found
    db.unlink(missing_ok=True)
    return run


def _drop_database(pg: PostgresServer, name: str) -> None:
    with psycopg.connect(pg.url(), autocommit=True) as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        conn.execute(drop)


def run_postgres(bench: Bench, verify: bool) -> Run:
    assert bench.pg is not None
    name = f"bench_{next(bench.databases)}"
    url = bench.pg.create_database(name)
    try:
        run = _skyfill_run(bench, url, verify)
        run.mismatches += compare_sink(url, bench.fh.truth)
    finally:
        _drop_database(bench.pg, name)
    return run


def compact(bench: Bench, log_dir: Path, out: Path) -> tuple[float, list[str]]:
    """`skyfill firehose compact LOG OUT` (not part of the timed run): (seconds, errors)."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    done = subprocess.run(
        [str(bench.skyfill), "firehose", "compact", str(log_dir), str(out)],
        capture_output=True,
        text=True,
        timeout=COMPACT_TIMEOUT,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        return seconds, [f"compact exit {done.returncode}: {done.stderr[-600:]}"]
    return seconds, []


def run_parquet(bench: Bench, verify: bool) -> Run:
    log_dir, current = bench.scratch / "log", bench.scratch / "current"
    shutil.rmtree(log_dir, ignore_errors=True)
    run = _skyfill_run(bench, str(log_dir), verify)
    if not log_dir.exists():
        run.mismatches.append("no event log")
        return run
    run.compact_s, errors = compact(bench, log_dir, current)
    run.mismatches += errors or compare_sink(str(current), bench.fh.truth)
    shutil.rmtree(log_dir, ignore_errors=True)
    shutil.rmtree(current, ignore_errors=True)
    return run


def baseline_command(python: Path, fh: ServedRecording, db: Path) -> list[str]:
    ws = fh.stream_url.removesuffix("/com.atproto.sync.subscribeRepos")
    script = shared_dir() / "baseline" / "sdk_firehose.py"
    return [
        str(python), str(script), "--url", ws, "--db", str(db),
        "--until-seq", str(fh.head_seq), "--server-pid", str(fh.pid),
    ]  # fmt: skip


def run_sdk(bench: Bench) -> Run:
    assert bench.sdk_python is not None
    db, log = bench.scratch / "sdk.db", bench.scratch / "sdk.log"
    db.unlink(missing_ok=True)
    run = _timed(baseline_command(bench.sdk_python, bench.fh, db), log, bench)
    run.mismatches = _exit_lines(run, log)
    run.mismatches += compare_sqlite(db, bench.fh.truth) if db.exists() else ["no output file"]
    db.unlink(missing_ok=True)
    return run


def run_once(bench: Bench, series: Series) -> Run:
    if series.sink == "sdk":
        return run_sdk(bench)
    runner = {"sqlite": run_sqlite, "postgres": run_postgres, "parquet": run_parquet}
    return runner[series.sink](bench, series.verify)


# -- setup ------------------------------------------------------------------------------------


def skyfill_available(skyfill: Path) -> bool:
    if not skyfill.exists():
        return False
    done = subprocess.run(
        [str(skyfill), "firehose", "--help"], capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


def sdk_python(workdir: Path) -> Path:
    """The Python of a venv with the atproto SDK (made once, kept under `workdir`)."""
    venv = workdir / f"sdk-venv-{SDK_VERSION}"
    python = venv / "bin" / "python"
    if not (venv / ".installed").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        pip = [str(python), "-m", "pip", "install", "-q", f"atproto=={SDK_VERSION}"]
        subprocess.run(pip, check=True, timeout=900, capture_output=True)
        (venv / ".installed").touch()
    return python


def make_series(args: argparse.Namespace, skyfill: bool) -> list[Series]:
    """The skyfill series (sink x verification), then the SDK's."""
    out = []
    if skyfill:
        for sink in args.sinks:
            for verify in VERIFY[args.verify]:
                label = f"skyfill {sink}" + ("" if verify else " no-verify")
                out.append(Series(label, sink, verify))
    if not args.no_baseline:
        out.append(Series(f"sdk {SDK_VERSION} sqlite", "sdk", verify=False))
    return out


# -- report -----------------------------------------------------------------------------------

HEAD = (
    "series", "best ev/s", "median ev/s", "wall s", "cpu s", "workers cpu s", "max RSS MB",
    "tree RSS MB", "fhserve cpu s", "pg cpu s", "exact runs", "x sdk",
)  # fmt: skip


def _row(series: Series, frames: int, sdk_best: float | None) -> tuple[str, ...]:
    rates = [frames / r.wall_s for r in series.runs]
    best = series.best(frames)
    exact = sum(not r.mismatches for r in series.runs)
    pg = "-" if best.pg_cpu_s is None else f"{best.pg_cpu_s:.2f}"
    ratio = f"{max(rates) / sdk_best:.2f}" if sdk_best else "-"
    return (
        series.label,
        f"{max(rates):,.0f}",
        f"{statistics.median(rates):,.0f}",
        f"{best.wall_s:.2f}",
        f"{best.cpu_s:.2f}",
        f"{best.workers_cpu_s:.2f}",
        f"{max(r.max_rss_mb for r in series.runs):.0f}",
        f"{max(r.tree_rss_mb for r in series.runs):.0f}",
        f"{best.server_cpu_s:.2f}",
        pg,
        f"{exact}/{len(series.runs)}",
        ratio,
    )


def _print_table(rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        cells = [row[0].ljust(widths[0])]
        cells += [cell.rjust(w) for cell, w in zip(row[1:], widths[1:], strict=True)]
        print("  ".join(cells))


def _cpu_check(ran: list[Series]) -> None:
    """Whether wait4's cpu s holds every descendant's CPU (reaped children >= seen)."""
    runs = [r for s in ran for r in s.runs]
    bad = [(s.label, i, r) for s in ran for i, r in enumerate(s.runs)
           if r.seen_cpu_s > r.workers_cpu_s + max(0.2, 0.05 * r.seen_cpu_s)]  # fmt: skip
    print(
        f"cpu check: descendants' CPU seen in /proc <= reaped children's CPU (in cpu s) in "
        f"{len(runs) - len(bad)}/{len(runs)} runs"
    )
    for label, i, run in bad:
        print(
            f"  {label} run {i + 1}: seen {run.seen_cpu_s:.2f} s, reaped "
            f"{run.workers_cpu_s:.2f} s: a child was not reaped, cpu s misses its CPU"
        )


def report(all_series: list[Series], frames: int) -> None:
    ran = [s for s in all_series if s.runs]
    if not ran:
        return
    sdk = next((s for s in ran if s.sink == "sdk"), None)
    sdk_best = frames / sdk.best(frames).wall_s if sdk else None
    _print_table([HEAD, *(_row(s, frames, sdk_best) for s in ran)])
    _cpu_check(ran)
    for series in ran:
        compacts = [r.compact_s for r in series.runs if r.compact_s is not None]
        if compacts:
            print(
                f"{series.label}: compact (not timed) {', '.join(f'{c:.2f}' for c in compacts)} s"
            )
        for i, run in enumerate(series.runs):
            for line in run.mismatches[:5]:
                print(f"{series.label} run {i + 1}: {line}")


# -- main -------------------------------------------------------------------------------------


def _sinks(value: str) -> list[str]:
    sinks = [s.strip() for s in value.split(",") if s.strip()]
    unknown = set(sinks) - set(SINKS)
    if unknown or not sinks:
        raise argparse.ArgumentTypeError(f"sinks are a comma-separated subset of {SINKS}")
    return sinks


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--accounts", type=int, default=500)
    p.add_argument("--events", type=int, default=20_000, help="commit events")
    p.add_argument("--repeat", type=int, default=3, help="runs of each series, round-robin")
    p.add_argument("--sinks", type=_sinks, default=list(SINKS), help="default: all three")
    p.add_argument("--verify", choices=tuple(VERIFY), default="both")
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "test-output" / "bench-firehose")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--close-at-end", action="store_true", help="fhserve closes after the head")
    p.add_argument("--durable", action="store_true", help="PostgreSQL with fsync on")
    p.add_argument("--skyfill", type=Path, default=Path(sys.executable).with_name("skyfill"),
                   help="the skyfill executable (default: beside this Python)")  # fmt: skip
    p.add_argument("--skyfill-arg", action="append", default=[], help="extra flag (repeatable)")
    return p.parse_args(argv)


def _run_rounds(bench: Bench, all_series: list[Series], repeat: int) -> None:
    for k in range(repeat):
        shift = k % len(all_series)
        for series in all_series[shift:] + all_series[:shift]:
            run = run_once(bench, series)
            series.runs.append(run)
            compact = f", compact {run.compact_s:.2f}s" if run.compact_s is not None else ""
            exact = "exact" if not run.mismatches else f"{len(run.mismatches)} mismatches"
            print(
                f"[{k + 1}/{repeat}] {series.label}: {run.wall_s:.2f}s exit {run.exit_code}, "
                f"{exact}{compact}",
                flush=True,
            )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.workdir.mkdir(parents=True, exist_ok=True)
    spec = RecordingSpec(
        accounts=args.accounts, events=args.events,
        handle_changes=None, deactivations=None, deactivate_final=None,
    )  # fmt: skip
    recording, generated = cached_recording(spec)
    origin = f"generated in {generated:.1f} s" if generated else "from the cache"
    size = recording.meta["frames_bytes"] / 1e6
    print(f"recording {recording.path}: {recording.frame_count} frames, {size:.1f} MB, {origin}")
    skyfill = skyfill_available(args.skyfill)
    if not skyfill:
        print(f"skyfill firehose ({args.skyfill}): not available yet")
    all_series = make_series(args, skyfill)
    if not all_series:
        return 0
    python = sdk_python(args.workdir) if not args.no_baseline else None
    uses_pg = any(s.sink == "postgres" for s in all_series)
    pg = start_postgres(DURABLE if args.durable else None) if uses_pg else None
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    try:
        with served(recording, scratch / "served", args.close_at_end) as fh:
            bench = Bench(fh, scratch, args.skyfill, args.skyfill_arg, python, pg)
            _run_rounds(bench, all_series, args.repeat)
        report(all_series, recording.frame_count)
    finally:
        if pg is not None:
            pg.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

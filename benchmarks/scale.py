"""Scale benchmark (issue 17): what grows with the job, and peak memory at 1M DIDs / 1M records.

Subcommands (`python -m benchmarks.scale SUB --help`):

  capacity  how many DIDs/s the simulated network itself answers (PLC document + getRepo,
            and PLC 404s), from a client that does nothing else: the ceiling of `flat`
  flat      `skyfill run` on the first 1k, 10k, 100k DIDs of one simnet of tiny repos (and a
            10-DID run for the fixed cost): DIDs/s, DIDs/s after the fixed cost, the ratio
            largest/smallest, peak RSS of the process tree, the state store's size
  million   a 1M-DID job (`--ok` tiny repos, the rest unknown to the PLC directory: they end
            `not_found` after one 404): `skyfill plan`, then `skyfill run` with its peak
            RSS per phase, `skyfill status` while it runs and after (seconds, peak RSS)
  bigrepo   one repo of `--records` records: peak RSS of `skyfill run` on it, per phase;
            `--stages` also decodes it in this process and prints RSS / Arrow memory after
            each stage (CAR bytes, decoded table, Parquet file)

Every server is `python -m skyfill.simnet` on loopback, stopped by PID (SIGTERM). RSS is the
sum over skyfill's process tree (skyfill, its fetch and decode processes), sampled with
psutil every 0.1 s; `million` also prints the tree's summed PSS (every 0.5 s), which counts
the pages the processes share (Python, pyarrow, aiohttp: ~80 MB per fetch process) once.
The phase is read from the job's state store (read-only) every 0.5 s.
Short commands (plan, status) are measured with /usr/bin/time (%e, %M).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import psutil

MB = 1 << 20
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
SKYFILL = [sys.executable, "-m", "skyfill"]


# -- the simulated network -------------------------------------------------------------------


@dataclass(slots=True)
class Net:
    pid: int
    plc: str
    pds: list[str]
    dids: list[str]
    started_seconds: float
    rss: int


@contextlib.contextmanager
def simnet(out: Path, *args: str) -> Iterator[Net]:
    """`python -m skyfill.simnet ARGS --out OUT`, until the block ends (SIGTERM by PID)."""
    cmd = [sys.executable, "-m", "skyfill.simnet", *args, "--out", str(out)]
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "simnet.log", "wb") as log:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise SystemExit(f"simnet exited early:\n{(out / 'simnet.log').read_text()}")
        ready = json.loads(line)
        for url in [ready["plc"], *ready["pds"]]:
            if urlsplit(url).hostname not in LOCAL_HOSTS:
                raise SystemExit(f"refusing non-local URL {url!r}")
        dids = Path(ready["dids"]).read_text().split()
        rss = psutil.Process(proc.pid).memory_info().rss
        yield Net(proc.pid, ready["plc"], ready["pds"], dids, time.perf_counter() - started, rss)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait()


# -- measuring a process tree ----------------------------------------------------------------


@dataclass(slots=True)
class Measured:
    seconds: float
    returncode: int
    peak_rss: int
    cpu_seconds: float
    peak_by_phase: dict[str, int] = field(default_factory=dict)
    seconds_by_phase: dict[str, float] = field(default_factory=dict)
    probes: list[dict] = field(default_factory=list)
    peak_pss: int = 0
    """The tree's summed PSS (every 0.5 s): shared library pages counted once, not once per
    process as in the summed RSS (a fetch process shares ~80 MB of them)."""
    pss_by_phase: dict[str, int] = field(default_factory=dict)


def _tree(proc: psutil.Process) -> list[psutil.Process]:
    with contextlib.suppress(psutil.Error):
        return [proc, *proc.children(recursive=True)]
    return []


def _tree_rss(proc: psutil.Process, cpu: dict[int, float]) -> int:
    total = 0
    for p in _tree(proc):
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
            t = p.cpu_times()
            cpu[p.pid] = t.user + t.system
    return total


def _tree_pss(proc: psutil.Process) -> int:
    total = 0
    for p in _tree(proc):
        with contextlib.suppress(psutil.Error):
            total += p.memory_full_info().pss
    return total


def _job_phase(state_db: Path | None) -> str:
    if state_db is None or not state_db.exists():
        return "start"
    try:
        with contextlib.closing(sqlite3.connect(f"file:{state_db}?mode=ro", uri=True)) as db:
            row = db.execute("SELECT status, phase FROM job").fetchone()
    except sqlite3.Error:
        return "planning"
    return "planning" if row is None else f"{row[0]}/{row[1]}"


def timed(cmd: list[str], log: Path) -> dict:
    """Run a short command under /usr/bin/time: its seconds, peak RSS and output."""
    fmt = "__time__ %e %M"
    with open(log, "ab") as out:
        done = subprocess.run(
            ["/usr/bin/time", "-f", fmt, *cmd], stdout=subprocess.PIPE, stderr=out, check=False
        )
    last = [ln for ln in log.read_text().splitlines() if ln.startswith("__time__")][-1]
    _, seconds, kb = last.split()
    return {
        "seconds": float(seconds),
        "peak_rss": int(kb) * 1024,
        "returncode": done.returncode,
        "stdout": done.stdout.decode(errors="replace"),
    }


def measure(
    cmd: list[str],
    log: Path,
    state_db: Path | None = None,
    probe: list[str] | None = None,
    probe_every: float = 0.0,
    env: dict[str, str] | None = None,
) -> Measured:
    """Run `cmd`, sampling its tree's RSS (0.1 s) and the job's phase (0.5 s); with `probe`,
    also run that command (e.g. `skyfill status`) every `probe_every` seconds."""
    cpu: dict[int, float] = {}
    peaks: dict[str, int] = {}
    spans: dict[str, float] = {}
    probes: list[dict] = []
    started = time.perf_counter()
    with open(log, "wb") as out:
        proc = psutil.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    stop = threading.Event()
    if probe:
        prober = threading.Thread(
            target=_probe_loop, args=(probe, probe_every, log, stop, probes, state_db), daemon=True
        )
        prober.start()
    phase, phase_at, last_read, peak, peak_pss = "start", started, 0.0, 0, 0
    pss_peaks: dict[str, int] = {}
    try:
        while proc.poll() is None:
            now = time.perf_counter()
            if now - last_read >= 0.5:
                new = _job_phase(state_db)
                if new != phase:
                    spans[phase] = spans.get(phase, 0.0) + now - phase_at
                    phase, phase_at = new, now
                last_read = now
                pss = _tree_pss(proc)
                peak_pss = max(peak_pss, pss)
                pss_peaks[phase] = max(pss_peaks.get(phase, 0), pss)
            rss = _tree_rss(proc, cpu)
            peak = max(peak, rss)
            peaks[phase] = max(peaks.get(phase, 0), rss)
            time.sleep(0.1)
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    end = time.perf_counter()
    spans[phase] = spans.get(phase, 0.0) + end - phase_at
    return Measured(
        end - started,
        proc.returncode,
        peak,
        sum(cpu.values()),
        peaks,
        spans,
        probes,
        peak_pss,
        pss_peaks,
    )


def _probe_loop(
    probe: list[str],
    every: float,
    log: Path,
    stop: threading.Event,
    probes: list[dict],
    state_db: Path | None,
) -> None:
    while not stop.wait(every):
        if state_db is None or not state_db.exists():
            continue
        result = timed(probe, log.with_suffix(".probe.log"))
        with contextlib.suppress(ValueError):
            facts = json.loads(result.pop("stdout"))
            result["done"] = facts.get("done")
            result["items"] = facts.get("items")
            result["status"] = facts.get("status")
        probes.append(result)


# -- skyfill commands ------------------------------------------------------------------------


def run_command(net: Net, dids_file: Path, workdir: Path, job_id: str, extra: list[str]) -> list:
    return [
        *SKYFILL,
        "run",
        "--dids",
        str(dids_file),
        "--plc-url",
        net.plc,
        "--allow-private-network",
        "--workdir",
        str(workdir),
        "--job-id",
        job_id,
        "--progress",
        "none",
        "--rate-limit",
        "1000000/1s",
        "--host-concurrency",
        "64",
        "--retries",
        "0",
        *extra,
    ]


def status_command(workdir: Path, job_id: str) -> list[str]:
    return [*SKYFILL, "status", job_id, "--workdir", str(workdir), "--json"]


def env_for(src: str | None) -> dict[str, str] | None:
    """The environment that runs skyfill from `src` (a directory holding skyfill/)."""
    if not src:
        return None
    return {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}


def write_dids(path: Path, dids: list[str]) -> Path:
    path.write_text("".join(f"{d}\n" for d in dids))
    return path


def dataset_counts(workdir: Path, job_id: str) -> tuple[int, dict[str, int]]:
    """Records written and DIDs per status, from the job's output."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    output = workdir / "jobs" / job_id / "output"
    records_dir = output / "records"
    records = 0
    if records_dir.exists():
        records = ds.dataset(records_dir, format="parquet", partitioning="hive").count_rows()
    status = pq.read_table(output / "repos.parquet", columns=["status"])["status"]
    counts = pc.value_counts(status).to_pylist()
    return records, {c["values"]: c["counts"] for c in counts}


def state_size(workdir: Path, job_id: str) -> int:
    root = workdir / "jobs" / job_id
    return sum(p.stat().st_size for p in root.glob("state.sqlite*"))


def fmt_mb(n: int) -> str:
    return f"{n / MB:,.0f}"


def header(args: argparse.Namespace) -> None:
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"# {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}; {os.cpu_count()} cpus")
    print(f"# load average {load}; args: {vars(args)}")
    import skyfill

    print(f"# skyfill from {Path(skyfill.__file__).parent}", flush=True)


# -- capacity --------------------------------------------------------------------------------


async def _hammer(net: Net, dids: list[str], concurrency: int, repo: bool) -> float:
    import aiohttp

    queue = list(reversed(dids))
    pds_of: dict[str, str] = {}

    async def one(session: aiohttp.ClientSession) -> None:
        while queue:
            did = queue.pop()
            async with session.get(f"{net.plc}/{did}") as resp:
                doc = await resp.json() if resp.status == 200 else None
            if not repo or doc is None:
                continue
            pds = pds_of.get(did) or doc["service"][0]["serviceEndpoint"]
            url = f"{pds}/xrpc/com.atproto.sync.getRepo?did={did}"
            async with session.get(url) as resp:
                await resp.read()

    started = time.perf_counter()
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:
        await asyncio.gather(*(one(session) for _ in range(concurrency)))
    return len(dids) / (time.perf_counter() - started)


def cmd_capacity(args: argparse.Namespace) -> None:
    header(args)
    with tempfile.TemporaryDirectory(prefix="scale-") as tmp:
        sim = ["--accounts", str(args.accounts), "--hosts", str(args.hosts)]
        sim += ["--mean-records", str(args.mean_records), "--unknown-dids", str(args.accounts)]
        with simnet(Path(tmp) / "net", *sim) as net:
            known, unknown = net.dids[: args.accounts], net.dids[args.accounts :]
            print(f"simnet up in {net.started_seconds:.1f}s, rss {fmt_mb(net.rss)} MB")
            for c in (16, 64):
                ok = asyncio.run(_hammer(net, known, c, repo=True))
                nf = asyncio.run(_hammer(net, unknown, c, repo=False))
                print(
                    f"concurrency {c:3}: PLC doc + getRepo {ok:8.0f} DIDs/s   PLC 404 {nf:8.0f}/s"
                )


# -- flat cost -------------------------------------------------------------------------------


def cmd_flat(args: argparse.Namespace) -> None:
    header(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scale-flat-"))
    sim = ["--accounts", str(max(sizes)), "--hosts", str(args.hosts)]
    sim += ["--mean-records", str(args.mean_records), "--seed", "17"]
    with simnet(work / "net", *sim) as net:
        print(
            f"simnet: {len(net.dids)} accounts on {args.hosts} hosts, up in "
            f"{net.started_seconds:.1f}s, rss {fmt_mb(net.rss)} MB",
            flush=True,
        )
        extra = ["--decode-processes", str(args.decode_processes)]
        srcs = args.srcs.split(",") if args.srcs else [""]
        rows = []
        fixed: dict[str, float] = {}
        for rep, n, src in [
            (r, n, s) for r in range(args.repeats) for n in [10, *sizes] for s in srcs
        ]:
            job = f"flat-{n}-{rep}-{srcs.index(src)}"
            dids = write_dids(work / f"{job}.dids", net.dids[:n])
            cmd = run_command(net, dids, work, job, extra)
            state_db = work / "jobs" / job / "state.sqlite"
            m = measure(cmd, work / f"{job}.log", state_db, env=env_for(src))
            if m.returncode != 0:
                raise SystemExit(f"{job}: exit {m.returncode}\n{(work / f'{job}.log').read_text()}")
            records, by_status = dataset_counts(work, job)
            row = {
                "src": src,
                "dids": n,
                "rep": rep,
                "seconds": m.seconds,
                "cpu": m.cpu_seconds,
                "peak_rss": m.peak_rss,
                "state": state_size(work, job),
                "records": records,
                "ok": by_status.get("ok", 0),
                "phases": m.seconds_by_phase,
                "phase_peaks": m.peak_by_phase,
            }
            if n == 10:
                fixed[src] = min(fixed.get(src, m.seconds), m.seconds)
            rows.append(row)
            _print_flat_row(row, fixed.get(src))
            if not args.keep:
                _remove_job(work, job)
        for src in srcs:
            _print_flat_summary([r for r in rows if r["src"] == src], fixed[src], sizes, src)


def _print_flat_row(row: dict, fixed: float | None) -> None:
    n, s = row["dids"], row["seconds"]
    after = (n - 10) / (s - fixed) if fixed and n > 10 and s > fixed else float("nan")
    phases = ", ".join(
        f"{k} {v:.1f} s {fmt_mb(row['phase_peaks'].get(k, 0))} MB" for k, v in row["phases"].items()
    )
    print(
        f"{row['src'][-24:]:>24} {n:>8} DIDs  {s:8.2f} s  {n / s:8.1f} DIDs/s"
        f"  >fixed {after:8.1f}  cpu {row['cpu']:7.1f}"
        f"  peak {fmt_mb(row['peak_rss']):>5} MB  state {fmt_mb(row['state']):>4} MB"
        f"  ok {row['ok']}  records {row['records']}  [{phases}]",
        flush=True,
    )


def _print_flat_summary(rows: list[dict], fixed: float, sizes: list[int], src: str) -> None:
    best: dict[int, dict] = {}
    for row in rows:
        if row["dids"] not in best or row["seconds"] < best[row["dids"]]["seconds"]:
            best[row["dids"]] = row
    print(
        f"\nskyfill from {src or 'the environment'}: best of runs; fixed cost (10-DID run) "
        f"{fixed:.2f} s"
    )
    print("    DIDs   best s   DIDs/s  >fixed DIDs/s  cpu s  cpu ms/DID  peak MB  state MB")
    rates = {}
    for n in sizes:
        r = best[n]
        rates[n] = (n - 10) / (r["seconds"] - fixed)
        print(
            f"{n:>8} {r['seconds']:8.2f} {n / r['seconds']:8.1f} {rates[n]:14.1f} {r['cpu']:6.1f}"
            f" {1000 * r['cpu'] / n:11.3f} {fmt_mb(r['peak_rss']):>8} {fmt_mb(r['state']):>9}"
        )
    lo, hi = sizes[0], sizes[-1]
    print(f"ratio {hi}/{lo} of >fixed DIDs/s: {rates[hi] / rates[lo]:.3f}")


def _remove_job(work: Path, job: str) -> None:
    import shutil

    shutil.rmtree(work / "jobs" / job, ignore_errors=True)


# -- a million DIDs --------------------------------------------------------------------------


def cmd_million(args: argparse.Namespace) -> None:
    header(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scale-million-"))
    unknown = args.dids - args.ok
    sim = ["--accounts", str(args.ok), "--hosts", str(args.hosts), "--mean-records"]
    sim += [str(args.mean_records), "--unknown-dids", str(unknown), "--seed", "23"]
    with simnet(work / "net", *sim) as net:
        print(
            f"simnet: {args.ok} accounts + {unknown} DIDs unknown to PLC, up in "
            f"{net.started_seconds:.1f}s, rss {fmt_mb(net.rss)} MB",
            flush=True,
        )
        dids = write_dids(work / "million.dids", net.dids)
        plan = [*SKYFILL, "plan", "--dids", str(dids), "--workdir", str(work)]
        plan += ["--plc-url", net.plc, "--allow-private-network"]
        p = timed(plan, work / "plan.log")
        print(
            f"skyfill plan: {p['seconds']:.1f} s, peak RSS {fmt_mb(p['peak_rss'])} MB, "
            f"exit {p['returncode']}",
            flush=True,
        )
        job = "million"
        extra = ["--decode-processes", str(args.decode_processes)]
        cmd = run_command(net, dids, work, job, extra)
        state_db = work / "jobs" / job / "state.sqlite"
        m = measure(cmd, work / f"{job}.log", state_db, status_command(work, job), args.probe_every)
        print(
            f"skyfill run: exit {m.returncode}, {m.seconds:.1f} s, {args.dids / m.seconds:.0f} "
            f"DIDs/s, cpu {m.cpu_seconds:.0f} s, peak RSS {fmt_mb(m.peak_rss)} MB "
            f"(PSS {fmt_mb(m.peak_pss)} MB)"
        )
        for phase, peak in m.peak_by_phase.items():
            pss = fmt_mb(m.pss_by_phase.get(phase, 0))
            print(
                f"  {phase:28} {m.seconds_by_phase.get(phase, 0):8.1f} s  peak {fmt_mb(peak):>5} MB"
                f"  PSS {pss:>5} MB"
            )
        for pr in m.probes:
            print(
                f"  status while running: {pr['seconds']:.2f} s, peak {fmt_mb(pr['peak_rss'])} "
                f"MB, {pr.get('done')}/{pr.get('items')} done ({pr.get('status')})"
            )
        after = timed(status_command(work, job), work / "status.log")
        print(
            f"skyfill status after: {after['seconds']:.2f} s, peak RSS "
            f"{fmt_mb(after['peak_rss'])} MB; state store {fmt_mb(state_size(work, job))} MB"
        )
        if m.returncode == 0:
            records, by_status = dataset_counts(work, job)
            print(f"output: {records} records; DIDs by status {by_status}")


# -- one big repo ----------------------------------------------------------------------------


def cmd_bigrepo(args: argparse.Namespace) -> None:
    header(args)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="scale-bigrepo-"))
    sim = ["--accounts", "1", "--hosts", "1", "--mean-records", "1", "--big", str(args.records)]
    with simnet(work / "net", *sim) as net:
        print(
            f"simnet: one repo of {args.records} records, up in {net.started_seconds:.1f}s, "
            f"rss {fmt_mb(net.rss)} MB",
            flush=True,
        )
        if args.stages:
            stages(net)
        dids = write_dids(work / "big.dids", net.dids)
        for p in [int(x) for x in args.decode_processes.split(",") if x]:
            job = f"big-p{p}"
            extra = ["--decode-processes", str(p), "--max-repo-bytes", "2g"]
            cmd = run_command(net, dids, work, job, extra)
            m = measure(cmd, work / f"{job}.log", work / "jobs" / job / "state.sqlite")
            if m.returncode != 0:
                print((work / f"{job}.log").read_text()[-3000:])
            records, by_status = dataset_counts(work, job) if m.returncode == 0 else (0, {})
            print(
                f"skyfill run --decode-processes {p}: exit {m.returncode}, {m.seconds:.1f} s, "
                f"peak RSS {fmt_mb(m.peak_rss)} MB, {records} records {by_status}",
                flush=True,
            )
            for phase, peak in m.peak_by_phase.items():
                print(
                    f"  {phase:28} {m.seconds_by_phase.get(phase, 0):8.1f} s  "
                    f"peak {fmt_mb(peak):>5} MB"
                )


class PeakSampler:
    """This process's RSS sampled every 10 ms in a thread: the peak since the last `take`."""

    def __init__(self) -> None:
        self._me = psutil.Process()
        self._peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.01):
            self._peak = max(self._peak, self._me.memory_info().rss)

    def take(self) -> tuple[int, int]:
        """(RSS now, peak since the last take)."""
        now = self._me.memory_info().rss
        peak, self._peak = max(self._peak, now), now
        return now, peak

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def stages(net: Net) -> None:
    """Decode the repo here as a worker task does, step by step: RSS after each step, its
    peak during the step, Arrow's allocation (skyfill.backfill.decode, storage.merge,
    storage.spool: the code `skyfill run --decode-processes 0` runs)."""
    import urllib.request

    import pyarrow as pa

    from skyfill.backfill.decode import decode_to_table
    from skyfill.storage import spool
    from skyfill.storage.merge import MergeSpec, sort_table

    sampler = PeakSampler()
    t0 = time.perf_counter()

    def show(stage: str) -> None:
        now, peak = sampler.take()
        arrow = fmt_mb(pa.total_allocated_bytes())
        print(
            f"  {stage:40} {time.perf_counter() - t0:6.1f} s  rss {fmt_mb(now):>6} MB"
            f"  peak in step {fmt_mb(peak):>6} MB  arrow {arrow:>5} MB",
            flush=True,
        )

    did = net.dids[0]
    show("start")
    url = f"{net.pds[0]}/xrpc/com.atproto.sync.getRepo?did={did}"
    with urllib.request.urlopen(url) as resp:  # loopback, checked above
        car = resp.read()
    show(f"CAR fetched ({fmt_mb(len(car))} MB)")
    decoded = decode_to_table(car, did, "stages", None, None, None)
    table = decoded.table
    show(f"decoded: {table.num_rows} rows, {fmt_mb(table.nbytes)} MB")
    for name in table.column_names:
        if table[name].nbytes > 4 * MB:
            print(f"    column {name:16} {fmt_mb(table[name].nbytes):>5} MB")
    del car
    show("CAR dropped")
    spec = MergeSpec(key_columns=("did", "collection", "rkey"), newest_column="rev")
    ordered = sort_table(table, spec)
    show("sorted (sort_table: a copy)")
    del decoded, table
    show("unsorted table dropped")
    with tempfile.TemporaryDirectory() as tmp:
        spool.write_segment(Path(tmp), "task-0000", 1, ordered)
        show("segment written (spool.write_segment)")
    del ordered
    show("sorted table dropped")
    sampler.stop()


# -- main ------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks.scale",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("capacity", help="the simnet's own DIDs/s")
    c.add_argument("--accounts", type=int, default=5000)
    c.add_argument("--hosts", type=int, default=4)
    c.add_argument("--mean-records", type=int, default=2)
    f = sub.add_parser("flat", help="DIDs/s at 1k, 10k, 100k DIDs")
    f.add_argument("--sizes", default="1000,10000,100000")
    f.add_argument("--hosts", type=int, default=8)
    f.add_argument("--mean-records", type=int, default=2)
    f.add_argument("--decode-processes", type=int, default=0)
    f.add_argument("--repeats", type=int, default=1)
    f.add_argument("--workdir", help="keep jobs here (default: a new temporary directory)")
    f.add_argument("--keep", action="store_true", help="keep each job's directory")
    f.add_argument(
        "--srcs",
        default="",
        help="comma list of source directories (each holding skyfill/) to run in turn, "
        "alternating, on the same network (default: skyfill as installed / PYTHONPATH)",
    )
    m = sub.add_parser("million", help="peak RSS of a 1M-DID job; plan and status")
    m.add_argument("--dids", type=int, default=1_000_000)
    m.add_argument("--ok", type=int, default=10_000, help="of which tiny repos (rest: 404)")
    m.add_argument("--hosts", type=int, default=8)
    m.add_argument("--mean-records", type=int, default=2)
    m.add_argument("--decode-processes", type=int, default=0)
    m.add_argument("--probe-every", type=float, default=60.0, help="seconds between statuses")
    m.add_argument("--workdir")
    b = sub.add_parser("bigrepo", help="peak RSS of one repo of --records records")
    b.add_argument("--records", type=int, default=1_000_000)
    b.add_argument(
        "--decode-processes", default="2,0", help="comma list: one run each (empty: none)"
    )
    b.add_argument("--stages", action="store_true", help="also decode it here, step by step")
    b.add_argument("--workdir")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    {"capacity": cmd_capacity, "flat": cmd_flat, "million": cmd_million, "bigrepo": cmd_bigrepo}[
        args.command
    ](args)


if __name__ == "__main__":
    main()

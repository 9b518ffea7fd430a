"""Firehose consumer benchmark: `skyfill firehose` against the baseline atproto SDK consumer
(`../shared/baseline/sdk_firehose.py`), on the same recorded stream, run alternately.

The stream is a recording of real signed commits (`../shared/staticnet/firehose.mjs`,
cached under $TMPDIR/skyfill-fh-cache by its inputs) served by fhserve.py as fast as it is
read, with a PLC for its DID documents (tests/firehose/recording.py). Each run replays it
from cursor 0 to the head into a fresh SQLite file; the file is then compared with the
recording's truth (records, handles, statuses). Per run: events/s (frames / wall), the
consumer's CPU seconds and max RSS (its own rusage, from wait4), fhserve's CPU seconds.

    .venv/bin/python -m benchmarks.firehose [--accounts 500 --events 20000] [--repeat 3]

The baseline needs the `atproto` SDK (0.0.73, the version ../shared/staticnet/README.md
measured), installed once into a venv of its own under --workdir. Until `skyfill firehose`
exists (its --help fails), only the baseline runs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.firehose.recording import (
    REPO_ROOT,
    RecordingSpec,
    ServedRecording,
    cached_recording,
    served,
    shared_dir,
)
from tests.firehose.truth import compare_sqlite

SDK_VERSION = "0.0.73"
RUN_TIMEOUT = 1800
SKYFILL = REPO_ROOT / ".venv" / "bin" / "skyfill"


@dataclass
class Run:
    wall_s: float
    cpu_s: float
    max_rss_mb: float
    server_cpu_s: float
    exit_code: int
    mismatches: list[str]


@dataclass
class Series:
    label: str
    runs: list[Run] = field(default_factory=list)


def _cpu_of(pid: int) -> float:
    """user + system CPU seconds of a running process (from /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        parts = stat.read().rsplit(")", 1)[1].split()
    return (int(parts[11]) + int(parts[12])) / os.sysconf("SC_CLK_TCK")


def _timed(
    command: list[str], log: Path, server_pid: int
) -> tuple[float, float, float, float, int]:
    """Run `command`: (wall s, its CPU s, its max RSS MB, the server's CPU s, exit code)."""
    server_before = _cpu_of(server_pid)
    started = time.perf_counter()
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
        try:
            _, status, usage = os.wait4(process.pid, 0)
        except BaseException:
            process.kill()
            raise
    wall = time.perf_counter() - started
    code = os.waitstatus_to_exitcode(status)
    process.returncode = code
    cpu = usage.ru_utime + usage.ru_stime
    return wall, cpu, usage.ru_maxrss / 1024, _cpu_of(server_pid) - server_before, code


def _measure(command: list[str], db: Path, log: Path, fh: ServedRecording) -> Run:
    db.unlink(missing_ok=True)
    wall, cpu, rss, server_cpu, code = _timed(command, log, fh.pid)
    mismatches = compare_sqlite(db, fh.truth) if db.exists() else ["no output file"]
    if code != 0:
        mismatches = [f"exit {code}: {log.read_text()[-600:]}", *mismatches]
    return Run(wall, cpu, rss, server_cpu, code, mismatches)


def skyfill_available() -> bool:
    if not SKYFILL.exists():
        return False
    done = subprocess.run(
        [str(SKYFILL), "firehose", "--help"], capture_output=True, timeout=60, check=False
    )
    return done.returncode == 0


def skyfill_command(fh: ServedRecording, db: Path, workdir: Path, extra: list[str]) -> list[str]:
    shutil.rmtree(workdir, ignore_errors=True)
    return [
        str(SKYFILL), "firehose", "--from-host", fh.host_url, "--sink", f"sqlite:///{db}",
        "--workdir", str(workdir), "--cursor", "0", "--until-live", "--plc-url", fh.plc_url,
        "--allow-private-network", *extra,
    ]  # fmt: skip


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


def baseline_command(python: Path, fh: ServedRecording, db: Path) -> list[str]:
    ws = fh.stream_url.removesuffix("/com.atproto.sync.subscribeRepos")
    script = shared_dir() / "baseline" / "sdk_firehose.py"
    return [
        str(python), str(script), "--url", ws, "--db", str(db),
        "--until-seq", str(fh.head_seq), "--server-pid", str(fh.pid),
    ]  # fmt: skip


def _row(series: Series, frames: int) -> tuple[str, ...]:
    rates = [frames / r.wall_s for r in series.runs]
    best = max(series.runs, key=lambda r: frames / r.wall_s)
    exact = sum(not r.mismatches for r in series.runs)
    return (
        series.label,
        f"{max(rates):,.0f}",
        f"{statistics.median(rates):,.0f}",
        f"{best.wall_s:.2f}",
        f"{best.cpu_s:.2f}",
        f"{max(r.max_rss_mb for r in series.runs):.0f}",
        f"{best.server_cpu_s:.2f}",
        f"{exact}/{len(series.runs)}",
    )


def report(all_series: list[Series], frames: int) -> None:
    head = ("consumer", "best ev/s", "median ev/s", "wall s", "cpu s", "max RSS MB",
            "server cpu s", "exact runs")  # fmt: skip
    rows = [head, *(_row(s, frames) for s in all_series if s.runs)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    for row in rows:
        print("  ".join(cell.rjust(w) for cell, w in zip(row, widths, strict=True)))
    for series in all_series:
        for i, run in enumerate(series.runs):
            for line in run.mismatches[:5]:
                print(f"{series.label} run {i + 1}: {line}")
    ran = [s for s in all_series if s.runs]
    if len(ran) == 2:
        best = [max(frames / r.wall_s for r in s.runs) for s in ran]
        print(f"ratio {ran[0].label}/{ran[1].label} (best events/s): {best[0] / best[1]:.2f}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--accounts", type=int, default=500)
    p.add_argument("--events", type=int, default=20_000, help="commit events")
    p.add_argument("--repeat", type=int, default=3, help="runs of each consumer, alternating")
    p.add_argument("--workdir", type=Path, default=REPO_ROOT / "test-output" / "bench-firehose")
    p.add_argument("--no-baseline", action="store_true")
    p.add_argument("--close-at-end", action="store_true", help="fhserve closes after the head")
    p.add_argument("--skyfill-arg", action="append", default=[], help="extra flag (repeatable)")
    return p.parse_args(argv)


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
    skyfill = Series("skyfill")
    if not skyfill_available():
        print("skyfill firehose: not available yet")
        skyfill = None
    baseline = None if args.no_baseline else Series(f"sdk {SDK_VERSION}")
    python = sdk_python(args.workdir) if baseline else None
    scratch = Path(tempfile.mkdtemp(prefix="run-", dir=args.workdir))
    try:
        with served(recording, scratch / "served", args.close_at_end) as fh:
            for k in range(args.repeat):
                if skyfill is not None:
                    db = scratch / "skyfill.db"
                    command = skyfill_command(fh, db, scratch / "wd", args.skyfill_arg)
                    run = _measure(command, db, scratch / "skyfill.log", fh)
                    skyfill.runs.append(run)
                    print(f"[{k + 1}/{args.repeat}] skyfill {run.wall_s:.2f}s exit {run.exit_code}")
                if baseline is not None and python is not None:
                    db = scratch / "sdk.db"
                    run = _measure(baseline_command(python, fh, db), db, scratch / "sdk.log", fh)
                    baseline.runs.append(run)
                    print(
                        f"[{k + 1}/{args.repeat}] baseline {run.wall_s:.2f}s exit {run.exit_code}"
                    )
        report([s for s in (skyfill, baseline) if s is not None], recording.frame_count)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

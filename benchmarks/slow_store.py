"""A slow state store against the fetches: `skyfill run` with every commit made slow.

The SQLite state store's `state_commit` failpoint sleeps in every commit of item outcomes
(`SKYFILL_FAILPOINT=state_commit:every:sleep=S`), as a slow disk or a distant store would.
Commits run off the event loop, so the fetches should barely notice: this prints DIDs/s
for each delay against the simulated network (same network, runs alternating, best of
`--repeat`), the ratio to the run without delay, and the time the commits took in all
(the time they would have stalled every fetch on the event loop).

    .venv/bin/python -m benchmarks.slow_store [--accounts 1000] [--delays 0,0.05,0.2]
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import sys
import tempfile
from pathlib import Path

from benchmarks.e2e import run_skyfill, simnet


def commits_of(workdir: Path, job_id: str) -> int:
    """Commits of item outcomes that wrote a segment (a lower bound of all commits)."""
    db = sqlite3.connect(workdir / "jobs" / job_id / "state.sqlite")
    try:
        return int(db.execute("SELECT COUNT(*) FROM segments").fetchone()[0])
    finally:
        db.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=1000)
    parser.add_argument("--delays", default="0,0.05,0.2")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=25)
    args = parser.parse_args(argv)
    delays = [float(d) for d in args.delays.split(",")]
    skyfill = [sys.executable, "-m", "skyfill"]
    os.environ["SKYFILL_BATCH_SIZE"] = str(args.batch_size)  # every flag has its variable
    best: dict[float, tuple[float, int]] = {}
    with tempfile.TemporaryDirectory(prefix="skyfill-slowstore-") as tmp:
        work = Path(tmp)
        with simnet(sys.executable, args.accounts, 4, 40, 7, work / "net") as net:
            dids = net.dids_path.read_text().split()
            for round_ in range(args.repeat):
                for delay in delays:
                    job_id = f"slow-{delay:g}-{round_}"
                    os.environ["SKYFILL_FAILPOINT"] = f"state_commit:every:sleep={delay}"
                    run = run_skyfill(
                        skyfill,
                        net,
                        dids,
                        work / "runs",
                        job_id,
                        processes=0,
                        concurrency=32,
                    )
                    os.environ.pop("SKYFILL_FAILPOINT", None)
                    if run.note:
                        raise SystemExit(f"{job_id}: {run.note}")
                    rate = run.dids / run.seconds
                    commits = commits_of(work / "runs", job_id)
                    if rate > best.get(delay, (0.0, 0))[0]:
                        best[delay] = (rate, commits)
    base = best[delays[0]][0]
    print(f"{args.accounts} DIDs, batch size {args.batch_size}, best of {args.repeat}")
    print(
        f"{'commit delay':>12} {'DIDs/s':>8} {'ratio':>6} {'commits':>8} "
        f"{'on-loop stall':>14} {'on-loop ratio at best':>22}"
    )
    for delay in delays:
        rate, commits = best[delay]
        stall = commits * delay
        # Had the commits run on the event loop, every fetch would have stopped for them:
        # the job would have taken at least the undelayed time plus all the commits' time.
        bound = args.accounts / (args.accounts / base + stall) / base
        print(
            f"{delay:>11g}s {rate:>8.1f} {rate / base:>6.2f} {commits:>8} "
            f"{stall:>13.1f}s {bound:>22.2f}"
        )


if __name__ == "__main__":
    main()

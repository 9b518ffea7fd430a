"""The whole network, simulated: does skyfill's scheduling reach the floor the limits set?

A synthetic network shaped like today's (`netsim_network`: ~43M repos on ~16k hosts at
`--scale 1.0`, heavy-tailed, 3000 or 6000 requests per 5 minutes per host, some hosts
slow or failing) is backfilled from a relay (`--from-relay`: listHosts, then each host's
listRepos, then every repo: PLC look-up and getRepo) on virtual time, by skyfill's own
limiters and scheduling decisions (`netsim_sim` says exactly what is real and what is
modelled). Nothing sleeps and no socket is opened.

Printed, for each fleet size in `--workers`: repos, hosts, the simulated wall time, the
floor (the slowest host's repos ÷ its rate), their ratio, requests/s overall, and what
keeps up: the requests in flight against the workers' `--concurrency` slots, and the
cores the peak 5-minute repo rate needs at the per-core throughput measured in
docs/BENCHMARKS.md §2 (59k records per CPU-second in a full `skyfill run`, at
`--records-per-repo` records a repo), in 2-core machines.

    .venv/bin/python -m benchmarks.netsim --scale 0.01                  # seconds
    .venv/bin/python -m benchmarks.netsim --scale 1.0 --unit 8 --workers 1,2,8
"""

from __future__ import annotations

import argparse
import math
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass

from benchmarks.netsim_network import NetworkShape, generate
from benchmarks.netsim_sim import BUCKET, Result, SimSettings, Simulation

RECORDS_PER_CPU_SECOND = 59_000
"""docs/BENCHMARKS.md §2: a full `skyfill run` (P=0) processes ~59k records per CPU-second."""
CORES_PER_MACHINE = 2


@dataclass(slots=True)
class Report:
    result: Result
    seconds: float
    records_per_repo: int

    @property
    def floor(self) -> float:
        return self.result.floor()[0]

    @property
    def ratio(self) -> float:
        return self.result.wall / self.floor

    def peak_repos_per_s(self) -> float:
        return max(self.result.throughput, default=0) / BUCKET

    def cores(self, repos_per_s: float) -> float:
        return repos_per_s * self.records_per_repo / RECORDS_PER_CPU_SECOND

    def lines(self) -> list[str]:
        rows = self.rows()
        width = max(len(k) for k, _ in rows)
        return [f"| {k.ljust(width)} | {v} |" for k, v in rows]

    def rows(self) -> list[tuple[str, str]]:
        r = self.result
        floor, host = r.floor()
        requests = sum(r.requests.values())
        mean, peak = r.repos / r.wall, self.peak_repos_per_s()
        slots = r.settings.concurrency or r.config.concurrency
        by_slots = math.ceil(r.max_in_flight / slots)
        machines = max(1, math.ceil(self.cores(peak) / CORES_PER_MACHINE))
        full = " (all slots at the busiest moment)" if by_slots >= r.workers else ""
        last = max(r.hosts, key=r.finished)
        plc = r.plc.spec
        kinds = ", ".join(f"{k} {v:,}" for k, v in r.requests.items())
        return [
            ("repos", f"{r.repos:,}"),
            (
                "hosts",
                f"{len(r.hosts):,} ({_tagged(r, 'slow')} slow, {_tagged(r, 'failing')} failing)",
            ),
            ("simulated wall time", _duration(r.wall)),
            (
                "floor: slowest host's repos / its rate",
                f"{_duration(floor)} ({host.name}: {host.repos:,} repos at "
                f"{host.spec.requests * r.unit}/{host.spec.window:g}s)",
            ),
            ("ratio wall / floor", f"{self.ratio:.4f}"),
            (
                "last host done",
                f"{last.name} ({last.repos:,} repos) at {_duration(r.finished(last))}",
            ),
            ("requests", f"{requests:,} ({kinds})"),
            ("requests/s overall", f"{requests / r.wall:,.1f}"),
            ("repos/s mean, peak 5 min", f"{mean:,.1f}, {peak:,.1f}"),
            ("repos not fetched", f"{r.failed:,} failed, {r.left_out:,} never listed"),
            ("phases", f"{r.phases} (backfill + retry phases)"),
            (
                "workers simulated",
                f"{r.workers} x --concurrency {slots}: at most {r.max_in_flight:,} in flight{full}",
            ),
            ("workers whose slots were used", f"{by_slots} (requests in flight / --concurrency)"),
            (
                "cores needed, peak and mean",
                f"{self.cores(peak):.1f}, {self.cores(mean):.2f} ({RECORDS_PER_CPU_SECOND:,} "
                f"records per CPU-s, {self.records_per_repo} records a repo)",
            ),
            (
                "2-core machines needed",
                f"{machines} for the peak's cores (the workers wait on the network: "
                f"{r.workers} fit on them)",
            ),
            (
                "PLC directory",
                f"{plc.requests * r.unit}/{plc.window:g}s: its own floor "
                f"{_duration(r.repos / (plc.per_second * r.unit))}",
            ),
            (
                "simulation",
                f"unit {r.unit}, {r.events:,} events, {self.seconds:.0f} s, peak RSS "
                f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024} MiB",
            ),
        ]


def simulate(shape: NetworkShape, settings: SimSettings, records_per_repo: int = 200) -> Report:
    started = time.perf_counter()
    result = Simulation(generate(shape), settings).run()
    return Report(result, time.perf_counter() - started, records_per_repo)


def _tagged(result: Result, tag: str) -> int:
    return sum(1 for h in result.hosts if tag in h.tags)


def _duration(seconds: float) -> str:
    if seconds >= 86_400:
        return f"{seconds:,.0f} s ({seconds / 86_400:.2f} days)"
    if seconds >= 3600:
        return f"{seconds:,.0f} s ({seconds / 3600:.2f} h)"
    return f"{seconds:,.1f} s"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    add = parser.add_argument
    add("--scale", type=float, default=0.01, help="share of today's network (1.0: 43M repos)")
    add("--seed", type=int, default=17)
    add("--unit", type=int, default=1, help="real repos per simulated repo: 1, 2, 4 or 8")
    add("--workers", default="8", help="fleet sizes to simulate, e.g. 1,2,8")
    add("--concurrency", type=int, default=None, help="--concurrency of each worker")
    add("--plc-rate", default="300000/5m", help="the PLC directory's limit")
    add("--top", type=int, default=4_000_000, help="repos on the largest host at scale 1.0")
    add("--slow-share", type=float, default=0.05, help="share of hosts 8x slower")
    add("--failing-share", type=float, default=0.03, help="share of hosts failing requests")
    add("--records-per-repo", type=int, default=200, help="for the cores needed")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    shape = NetworkShape(
        scale=args.scale,
        seed=args.seed,
        top=args.top,
        slow_share=args.slow_share,
        failing_share=args.failing_share,
    )
    print(
        f"netsim {' '.join(sys.argv[1:])}: Python {platform.python_version()}, commit "
        f"{_commit()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
    )
    for workers in (int(w) for w in args.workers.split(",")):
        settings = SimSettings(
            unit=args.unit,
            workers=workers,
            plc_rate=args.plc_rate,
            seed=args.seed,
            concurrency=args.concurrency,
        )
        report = simulate(shape, settings, args.records_per_repo)
        print(f"\n{workers} worker(s):\n" + "\n".join(report.lines()), flush=True)
    return 0


def _commit() -> str:
    try:
        git = ["git", "rev-parse", "--short", "HEAD"]
        return subprocess.run(git, capture_output=True, text=True).stdout.strip() or "?"
    except OSError:
        return "?"


if __name__ == "__main__":
    sys.exit(main())

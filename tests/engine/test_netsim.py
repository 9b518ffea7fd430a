"""The whole network, simulated (benchmarks/netsim.py) at a small scale: skyfill's own
limiters and scheduling on virtual time must reach the floor the hosts' limits set, and a
failing host must neither block nor stretch the others. Virtual time: nothing sleeps, so
the machine's load changes how long this takes, never what it finds."""

from __future__ import annotations

from dataclasses import replace

from benchmarks.netsim import simulate
from benchmarks.netsim_network import NetworkShape, generate
from benchmarks.netsim_sim import SimSettings, Simulation

SHAPE = NetworkShape(scale=0.004, seed=3)
"""172,000 repos on 64 hosts, the largest 16,000; slow and failing hosts among them."""
SETTINGS = SimSettings(workers=2, unit=2, seed=3)


def test_the_backfill_reaches_the_floor_the_limits_set() -> None:
    report = simulate(SHAPE, SETTINGS)
    result = report.result
    assert any("failing" in h.tags for h in result.hosts)
    assert any("slow" in h.tags for h in result.hosts)
    assert report.ratio <= 1.05, "\n".join(report.lines())
    assert result.left_out == 0 and result.failed == 0
    assert sum(h.ok for h in result.hosts) * SETTINGS.unit >= result.repos


def test_a_failing_host_neither_blocks_nor_stretches_the_others() -> None:
    """The same network twice, all healthy, then with one of its larger hosts failing
    half its requests (500) and hanging one in ten until the timeout: no other host
    finishes later than it did (a little earlier is fine: the failing host's repos that
    could not be listed are not fetched)."""
    network = generate(replace(SHAPE, slow_share=0.0, failing_share=0.0))
    healthy = Simulation(network, SETTINGS).run()
    victim = sorted(network, key=lambda h: -h.repos)[2]
    failing = [
        replace(h, fail_5xx=0.5, fail_hang=0.1, tags=["failing"]) if h is victim else h
        for h in network
    ]
    broken = Simulation(failing, SETTINGS).run()
    before = {h.name: h.finished_at for h in healthy.hosts}
    stretched = {
        h.name: (before[h.name], h.finished_at)
        for h in broken.hosts
        if h.name != victim.name
        and (h.finished_at or 0) - (before[h.name] or 0) > max(30.0, 0.02 * healthy.wall)
    }
    assert stretched == {}
    sick = broken.hosts[network.index(victim)]
    assert sick.limiter.stats.errors > 100 and sick.listed > 0
    floor = healthy.floor()[0]
    others = max(broken.finished(h) for h in broken.hosts if h.name != victim.name)
    assert others <= 1.05 * floor

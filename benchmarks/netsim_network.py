"""The synthetic network of `benchmarks/netsim.py`: hosts, their repos, limits and health.

Shaped like the AT Protocol network today (~43M repos on ~16k hosts) at `scale` 1.0, and
heavy-tailed like it: a few hosts hold millions of repos, a body of hosts thousands to
hundreds of thousands, and most hosts (75 %) a handful (1–10). Sizes of the body follow a
power law by rank (size ∝ rank^-a) with lognormal noise; `a` is solved so that the total
is right with the largest host at `top` repos. Everything is drawn from one seeded
`random.Random`, so a seed gives the same network every time.

Per host: its limit (3000 or 6000 requests per 5 minutes, as PDSes announce them), its
latency (median, lognormal jitter), and its health: a share of hosts is slow (latency ×
`slow_factor`), a share is failing (a share of requests answered 5xx, a share hanging
until the client's timeout). The largest hosts (`healthy_top`) are kept healthy: they set
the floor, and the question asked is whether the scheduling reaches it.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

FULL_REPOS = 43_000_000
FULL_HOSTS = 16_000
TAIL_SHARE = 0.75
"""Share of hosts holding a handful of repos (1–10)."""
TAIL_MAX = 10
SIZE_NOISE = 0.3
"""Sigma of the lognormal noise on the body's sizes."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NetworkShape:
    scale: float = 1.0
    """Share of today's network: repos and hosts are both multiplied by it."""
    seed: int = 17
    top: int = 4_000_000
    """Repos on the largest host at scale 1.0 (multiplied by `scale` too)."""
    fast_share: float = 0.25
    """Share of hosts allowing 6000 requests per 5 minutes (the others 3000)."""
    latency: float = 0.15
    """Median seconds to the answer's headers on a healthy host."""
    jitter: float = 0.4
    """Sigma of the lognormal latency jitter."""
    slow_share: float = 0.05
    slow_factor: float = 8.0
    failing_share: float = 0.03
    fail_5xx: float = 0.2
    """Share of a failing host's requests answered 500."""
    fail_hang: float = 0.01
    """Share of a failing host's requests that hang until the client's timeout."""
    healthy_top: int = 5


@dataclass(slots=True)
class HostSpec:
    name: str
    repos: int
    rate: str
    """The host's limit, e.g. `3000/5m` (what its RateLimit-* headers say)."""
    latency: float
    fail_5xx: float = 0.0
    fail_hang: float = 0.0
    tags: list[str] = field(default_factory=list)
    """`slow`, `failing`: what the network made of it."""


def generate(shape: NetworkShape) -> list[HostSpec]:
    """The hosts, in the order a relay lists them (not by size)."""
    rng = random.Random(shape.seed)
    hosts_n = max(4, round(FULL_HOSTS * shape.scale))
    total = max(hosts_n * 2, round(FULL_REPOS * shape.scale))
    tail_n = round(hosts_n * TAIL_SHARE)
    tail = [rng.randint(1, TAIL_MAX) for _ in range(tail_n)]
    body_n = hosts_n - tail_n
    sizes = _body(rng, body_n, total - sum(tail), max(1, round(shape.top * shape.scale)))
    sizes += tail
    hosts: list[HostSpec] = []
    for rank, repos in enumerate(sizes):  # largest first
        fast = rng.random() < shape.fast_share
        hosts.append(
            HostSpec(
                name=f"pds{rank:05d}.sim",
                repos=repos,
                rate="6000/5m" if fast else "3000/5m",
                latency=shape.latency * math.exp(rng.gauss(0, 0.2)),
            )
        )
    for host in hosts[shape.healthy_top :]:
        draw = rng.random()
        if draw < shape.slow_share:
            host.latency *= shape.slow_factor
            host.tags.append("slow")
        elif draw < shape.slow_share + shape.failing_share:
            host.fail_5xx, host.fail_hang = shape.fail_5xx, shape.fail_hang
            host.tags.append("failing")
    rng.shuffle(hosts)
    return hosts


def _body(rng: random.Random, count: int, total: int, top: int) -> list[int]:
    """`count` sizes summing to about `total`, the largest `top`, power law by rank."""
    if count <= 0:
        return []
    if count == 1:
        return [total]
    exponent = _solve_exponent(count, total / top)
    raw = [top * (rank**-exponent) * math.exp(rng.gauss(0, SIZE_NOISE)) for rank in range(1, count)]
    raw.sort(reverse=True)
    rest = total - top
    factor = rest / sum(raw)
    body = [top, *(max(TAIL_MAX + 1, round(size * factor)) for size in raw)]
    body.sort(reverse=True)
    return body


def _solve_exponent(count: int, ratio: float) -> float:
    """The `a` for which sum(rank^-a, rank 1..count) equals `ratio` (bisection)."""
    low, high = 0.0, 4.0
    for _ in range(60):
        mid = (low + high) / 2
        if sum(rank**-mid for rank in range(1, count + 1)) > ratio:
            low = mid
        else:
            high = mid
    return (low + high) / 2

"""Latency histograms: quantiles close to the exact ones, merging, JSON round trip."""

from __future__ import annotations

import random

from skyfill.telemetry.histogram import BOUNDS, LatencyHistogram


def _exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def test_quantiles_are_within_a_bucket_of_the_exact_ones() -> None:
    rng = random.Random(3)
    values = [rng.lognormvariate(-3.5, 1.0) for _ in range(5000)]  # ~30 ms median
    hist = LatencyHistogram()
    for v in values:
        hist.observe(v)
    assert hist.count == 5000
    for q in (0.5, 0.95, 0.99):
        exact = _exact(values, q)
        got = hist.quantile(q)
        assert got is not None
        assert exact / 1.6 <= got <= exact * 1.6, (q, exact, got)
    summary = hist.summary()
    assert summary["p50"] <= summary["p95"] <= summary["p99"] <= summary["max"]
    assert abs(summary["mean"] - sum(values) / len(values)) < 1e-6


def test_empty_histogram_has_no_quantiles() -> None:
    hist = LatencyHistogram()
    assert hist.quantile(0.5) is None
    assert hist.summary() == {
        "count": 0,
        "mean": None,
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
    }


def test_merge_and_round_trip() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    for v in (0.001, 0.004, 0.2):
        a.observe(v)
    for v in (0.2, 500.0):  # above the last bound: the overflow bucket
        b.observe(v)
    a.merge(b)
    assert a.count == 5 and a.counts[-1] == 1 and a.max == 500.0
    assert a.quantile(1.0) == 500.0
    again = LatencyHistogram.from_dict(a.to_dict())
    assert again.counts == a.counts and again.max == a.max
    assert abs(again.total - a.total) < 1e-6
    assert LatencyHistogram.from_dict({"counts": [1, 2]}).count == 0  # a foreign layout
    assert len(a.counts) == len(BOUNDS) + 1

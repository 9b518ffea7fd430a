"""The recorded timeline as series: counters cumulative over runs, rates, thinning."""

from __future__ import annotations

from skyfill.monitor.series import series


def _sample(t: float, run: str, done: int, records: int) -> dict:
    return {
        "t": t,
        "run": run,
        "items": {"ok": done, "pending": 100 - done},
        "records": records,
        "requests": records // 10,
    }


def test_counters_add_up_over_runs_and_rates_follow() -> None:
    samples = [
        _sample(100, "a:1", 0, 0),
        _sample(102, "a:1", 20, 400),
        _sample(104, "a:1", 40, 800),
        _sample(200, "b:2", 40, 0),  # resumed: this run's counters start again
        _sample(202, "b:2", 60, 300),
    ]
    points = series(samples)
    assert [p["done"] for p in points] == [0, 20, 40, 40, 60]
    assert [p["records"] for p in points] == [0, 400, 800, 800, 1100]
    assert [p["elapsed_s"] for p in points] == [0, 2, 4, 100, 102]
    assert points[1]["dids_per_s"] == 10.0 and points[1]["records_per_s"] == 200.0
    assert points[3]["dids_per_s"] == 0.0
    assert points[4]["records_per_s"] == 150.0 and points[4]["requests"] == 110


def test_thinning_keeps_first_and_last_and_true_totals() -> None:
    samples = [_sample(float(t), "a:1", t // 10, t * 3) for t in range(0, 1000)]
    points = series(samples, max_points=50)
    assert len(points) == 50
    assert points[0]["t"] == 0 and points[-1]["t"] == 999
    assert points[-1]["records"] == 999 * 3
    rates = [p["records_per_s"] for p in points[1:]]
    assert all(abs(r - 3.0) < 1e-6 for r in rates)

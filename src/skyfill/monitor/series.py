"""The recorded timeline (state store samples) as time series ready to plot.

Counters in samples (records, requests, bytes, 429s...) start at zero with each run of the
job (`run`); here they are made cumulative over the whole job, like Prometheus' `increase`
over counter resets. Item counts come from the state store and already span every run.
"""

from __future__ import annotations

import itertools
from typing import Any

COUNTERS = ("dids", "records", "requests", "rate_limited", "bytes", "retries", "wait_seconds")
MAX_POINTS = 600


def done_items(sample: dict[str, Any]) -> int:
    items = sample.get("items") or {}
    return sum(n for status, n in items.items() if status != "pending")


def series(samples: list[dict[str, Any]], max_points: int = MAX_POINTS) -> list[dict[str, Any]]:
    """One point per sample (at most `max_points`, evenly thinned; first and last kept):
    t, elapsed_s, done, items per status, cumulative counters, and the rates since the
    previous point (dids_per_s, records_per_s, requests_per_s)."""
    points: list[dict[str, Any]] = []
    offsets = dict.fromkeys(COUNTERS, 0.0)
    last_value = dict.fromkeys(COUNTERS, 0.0)
    last_run = None
    start = samples[0]["t"] if samples else 0.0
    for sample in samples:
        if sample.get("run") != last_run:
            for name in COUNTERS:  # a new run: its counters start at zero again
                offsets[name] += last_value[name]
                last_value[name] = 0.0
            last_run = sample.get("run")
        point: dict[str, Any] = {
            "t": sample["t"],
            "elapsed_s": round(sample["t"] - start, 3),
            "status": sample.get("status"),
            "phase": sample.get("phase"),
            "done": done_items(sample),
            "items": {k: v for k, v in (sample.get("items") or {}).items()},
        }
        for name in COUNTERS:
            value = float(sample.get(name) or 0)
            if value < last_value[name]:  # reset within a run (should not happen)
                offsets[name] += last_value[name]
            last_value[name] = value
            point[name] = offsets[name] + value
        points.append(point)
    points = thin(points, max_points)
    # Items count as done when their checkpoint commits (every few seconds); the handler's
    # own counter of finished items, when it keeps one, gives the smoother rate.
    finished = "dids" if any(s.get("dids") for s in samples) else "done"
    for before, point in itertools.pairwise(points):
        span = max(point["t"] - before["t"], 1e-9)
        point["dids_per_s"] = round((point[finished] - before[finished]) / span, 3)
        point["records_per_s"] = round((point["records"] - before["records"]) / span, 3)
        point["requests_per_s"] = round((point["requests"] - before["requests"]) / span, 3)
    if points:
        points[0].update(dids_per_s=0.0, records_per_s=0.0, requests_per_s=0.0)
    return points


def thin(points: list[dict[str, Any]], max_points: int) -> list[dict[str, Any]]:
    """At most `max_points` of `points`, evenly spaced, first and last kept."""
    if len(points) <= max_points or max_points < 2:
        return points
    step = (len(points) - 1) / (max_points - 1)
    return [points[round(i * step)] for i in range(max_points)]

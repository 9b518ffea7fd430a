"""Latency histograms with fixed buckets: cheap to record, mergeable across processes and
machines (add the counts), exportable as Prometheus histograms, and good for quantiles.

The bucket bounds are log-spaced from 1 ms to 2 min (about 1.5x apart), so a quantile
read back from the buckets (linear within its bucket, as Prometheus' histogram_quantile
does) is within that factor of the true value, and usually much closer.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

BOUNDS: tuple[float, ...] = (
    0.001, 0.0015, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
    0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0, 30.0,
    60.0, 120.0,
)  # fmt: skip
"""Upper bounds (seconds) of the buckets; one more bucket holds everything above."""


@dataclass(slots=True)
class LatencyHistogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(BOUNDS) + 1))
    """Observations per bucket (not cumulative); the last is above the last bound."""
    total: float = 0.0
    """Sum of the observed seconds."""
    max: float = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        self.counts[bisect.bisect_left(BOUNDS, seconds)] += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def merge(self, other: LatencyHistogram) -> None:
        for i, n in enumerate(other.counts):
            self.counts[i] += n
        self.total += other.total
        self.max = max(self.max, other.max)

    def quantile(self, q: float) -> float | None:
        """The q-quantile (0..1) in seconds, interpolated within its bucket; None if empty."""
        count = self.count
        if count == 0:
            return None
        rank = q * count
        seen = 0
        for i, n in enumerate(self.counts):
            if n and seen + n >= rank:
                low = BOUNDS[i - 1] if i > 0 else 0.0
                high = BOUNDS[i] if i < len(BOUNDS) else max(self.max, low)
                value = low + (high - low) * max(0.0, rank - seen) / n
                return min(value, self.max)
            seen += n
        return self.max

    def summary(self) -> dict[str, float | int | None]:
        """count, mean, p50, p95, p99 and max, in seconds."""
        count = self.count
        return {
            "count": count,
            "mean": round(self.total / count, 6) if count else None,
            "p50": _round(self.quantile(0.50)),
            "p95": _round(self.quantile(0.95)),
            "p99": _round(self.quantile(0.99)),
            "max": round(self.max, 6) if count else None,
        }

    def to_dict(self) -> dict[str, Any]:
        return {"counts": list(self.counts), "sum": round(self.total, 6), "max": self.max}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> LatencyHistogram:
        """From `to_dict()`'s form; an empty histogram for None or a foreign layout."""
        hist = cls()
        if not data or len(data.get("counts", ())) != len(BOUNDS) + 1:
            return hist
        hist.counts = [int(n) for n in data["counts"]]
        hist.total = float(data.get("sum", 0.0))
        hist.max = float(data.get("max", 0.0))
        return hist


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)

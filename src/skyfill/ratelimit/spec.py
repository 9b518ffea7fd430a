"""Rate specs such as `3000/5m`: requests per window."""

from __future__ import annotations

import re
from dataclasses import dataclass

from skyfill.errors import UsageError

_SPEC = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*([smh]?)\s*$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "": 1.0}


@dataclass(frozen=True, slots=True)
class RateSpec:
    requests: int
    window: float
    """Seconds."""

    @property
    def per_second(self) -> float:
        return self.requests / self.window

    def __str__(self) -> str:
        return f"{self.requests}/{self.window:g}s"  # parse_rate reads this back


def parse_rate(text: str) -> RateSpec:
    """`3000/5m`, `100/1m`, `20/10s`, `5/s` -> RateSpec."""
    match = _SPEC.match(str(text))
    if not match or int(match[1]) < 1:
        raise UsageError(f"not a rate: {text!r} (want e.g. 3000/5m, 100/1m, 20/10s)")
    amount = float(match[2]) if match[2] else 1.0
    window = amount * _UNIT[match[3]]
    if window <= 0:
        raise UsageError(f"not a rate: {text!r} (the window must be positive)")
    return RateSpec(int(match[1]), window)


def parse_host_rates(entries: list[str] | dict[str, str]) -> dict[str, RateSpec]:
    """`["pds.example.com=100/1m", ...]` or a mapping -> {host: RateSpec}."""
    pairs = entries.items() if isinstance(entries, dict) else (_split(e) for e in entries)
    return {host.strip().lower(): parse_rate(spec) for host, spec in pairs}


def _split(entry: str) -> tuple[str, str]:
    host, sep, spec = entry.partition("=")
    if not sep or not host.strip():
        raise UsageError(
            f"not a host rate: {entry!r} (want HOST=RATE, e.g. pds.example.com=100/1m)"
        )
    return host, spec

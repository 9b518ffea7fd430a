"""A running stream, seen: a JSON log line (event `firehose_progress`) every interval off
a terminal, a live table on one, and the same facts as Prometheus metrics."""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from skyfill.telemetry.showing import Facts
from skyfill.telemetry.showing import showing as show

log = logging.getLogger("skyfill.progress")

COUNTERS = (
    ("received", "Frames read from the host"),
    ("applied", "Events applied to the sink"),
    ("skipped", "Events not applied (already applied, filtered out, unknown type)"),
    ("malformed", "Frames that could not be read or commits that did not verify"),
    ("ops", "Record operations applied"),
    ("desynchronized", "Times a repo was found out of step"),
    ("resynced", "Repos fetched again whole and applied"),
    ("reconnects", "Reconnections to the host"),
    ("bytes", "Bytes of frames read"),
)
GAUGES = (
    ("events_per_s", "Events per second (this run)"),
    ("lag_s", "Seconds between the newest event read and now"),
    ("lag_seqs", "Seqs between the newest event read and the host's head"),
    ("cursor", "The seq saved with the rows it covers"),
    ("desynchronized_repos", "Repos waiting for a re-fetch"),
    ("rss_bytes", "Resident memory of the process"),
)


def summary_line(facts: dict[str, Any]) -> str:
    lag = facts.get("lag_s")
    return (
        f"{facts['received']} events ({facts['applied']} applied, {facts['skipped']} skipped, "
        f"{facts['malformed']} malformed), {facts['ops']} ops, "
        f"{facts['events_per_s']:.0f} events/s, cursor {facts['cursor']}, "
        f"lag {'-' if lag is None else f'{lag:.1f} s'}, "
        f"{facts['desynchronized_repos']} repos desynchronized"
    )


def showing(facts: Facts, kind: str, interval: float) -> AbstractAsyncContextManager[None]:
    """Progress while the block runs (see `telemetry.showing`)."""
    return show(facts, kind, interval, event="firehose_progress", line=summary_line, table=_table)


def _table(now: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"firehose {now.get('stream_id', '')}", show_header=False)
    for name in ("received", "applied", "skipped", "malformed", "ops", "events_per_s"):
        table.add_row(name.replace("_", " "), str(now.get(name)))
    for name in ("cursor", "head", "lag_s", "lag_seqs", "desynchronized_repos"):
        table.add_row(name.replace("_", " "), str(now.get(name)))
    table.add_row("memory", f"{(now.get('rss_bytes') or 0) / 2**20:.0f} MiB")
    return table


class _Collector:
    def __init__(self, facts: Callable[[], dict[str, Any]], stream_id: str) -> None:
        self._facts = facts
        self._stream = stream_id

    def collect(self) -> Any:
        now = self._facts()
        for name, text in COUNTERS:
            family = CounterMetricFamily(f"skyfill_firehose_{name}", text, labels=["stream"])
            family.add_metric([self._stream], float(now.get(name) or 0))
            yield family
        for name, text in GAUGES:
            value = now.get(name)
            if value is None:
                continue
            family = GaugeMetricFamily(f"skyfill_firehose_{name}", text, labels=["stream"])
            family.add_metric([self._stream], float(value))
            yield family


def serve_metrics(facts: Callable[[], dict[str, Any]], stream_id: str, port: int) -> None:
    """Prometheus metrics of this stream on 127.0.0.1:`port` (/metrics)."""
    registry = CollectorRegistry()
    registry.register(_Collector(facts, stream_id))
    start_http_server(port, addr="127.0.0.1", registry=registry)

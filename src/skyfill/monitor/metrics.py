"""Prometheus metrics of one job on `/metrics` (`--metrics-port PORT`).

Nothing is counted here: at each scrape the collector reads the job's state store (DIDs
per status, pending work, the runner's heartbeat) and the handler statistics the runner
and its workers publish there (requests, latency histograms, bytes, records). So the
numbers are those of every process working on the job, wherever it runs - decoding
processes, worker machines - with no Prometheus multiprocess mode, and the exporter can
run in `skyfill run` itself or in any process that can read the state store.

    skyfill_dids_total{status}              DIDs whose outcome is `status` (all runs)
    skyfill_records_total{collection}       records decoded (this run)
    skyfill_requests_total{host,code}       HTTP requests by answer (`none`: no answer)
    skyfill_request_seconds{host}           histogram: request to answer headers
    skyfill_rate_limited_total{host}        429 answers
    skyfill_rate_limit_wait_seconds_total   time requests waited for their host's turn
    skyfill_bytes_total                     bytes received
    skyfill_retries_total                   tries of a DID beyond its first
    skyfill_queue_depth{kind}               pending items / tasks
    skyfill_workers_alive                   runners/workers with a fresh heartbeat
    skyfill_heartbeat_age_seconds           since the runner's last heartbeat
    skyfill_job_info{job_id,status,phase}   1

Counters of "this run" start again at zero when a job is resumed, as Prometheus expects
of a restarted process.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import start_http_server
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from skyfill.engine.lifecycle import is_live
from skyfill.engine.model import ItemStatus, TaskStatus
from skyfill.engine.state.base import StateStore
from skyfill.errors import UsageError
from skyfill.monitor.snapshot import SILENT_AFTER, published_stats, workers_of
from skyfill.monitor.sources import JobSource
from skyfill.telemetry.histogram import BOUNDS, LatencyHistogram

log = logging.getLogger(__name__)


class JobCollector(Collector):
    """Reads one job's state store at each scrape (its own connection, under a lock)."""

    def __init__(self, source: JobSource, job_id: str) -> None:
        self._source = source
        self._job_id = job_id
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        self._store: StateStore | None = None

    def _open(self) -> StateStore | None:
        if self._store is None:
            try:
                self._store = self._stack.enter_context(self._source.open(self._job_id))
            except UsageError:  # not planned yet: nothing to report
                return None
        return self._store

    def close(self) -> None:
        with self._lock:
            self._stack.close()
            self._store = None

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            store = self._open()
            if store is None:
                return
            yield from job_metrics(store)


def job_metrics(store: StateStore) -> list[Metric]:
    """Every metric of the job, from its state store (see the module docstring)."""
    job = store.job()
    if job is None:
        return []
    counts = store.status_counts()
    stats = published_stats(store)
    hosts: dict[str, dict[str, Any]] = stats.get("hosts") or {}
    metrics: list[Metric] = []

    info = GaugeMetricFamily(
        "skyfill_job_info", "The job and where it is.", labels=["job_id", "status", "phase"]
    )
    info.add_metric([job.job_id, str(job.status), job.phase], 1)
    metrics.append(info)

    dids = CounterMetricFamily(
        "skyfill_dids", "DIDs whose recorded outcome is this status.", labels=["status"]
    )
    for status, n in sorted(counts.items()):
        if status != ItemStatus.PENDING:
            dids.add_metric([status], n)
    metrics.append(dids)

    records = CounterMetricFamily(
        "skyfill_records", "Records decoded in this run.", labels=["collection"]
    )
    for collection, n in sorted((stats.get("records_by_collection") or {}).items()):
        records.add_metric([collection], n)
    metrics.append(records)

    metrics += _host_metrics(hosts)

    totals = stats.get("totals") or {}
    wait = CounterMetricFamily(
        "skyfill_rate_limit_wait_seconds",
        "Seconds requests waited for their host's turn (rate limits, 429 blocks).",
    )
    wait.add_metric([], float(totals.get("wait_seconds", 0.0)))
    received = CounterMetricFamily("skyfill_bytes", "Bytes received from hosts.")
    received.add_metric([], float(totals.get("bytes", 0)))
    retries = CounterMetricFamily("skyfill_retries", "Tries of a DID beyond its first.")
    retries.add_metric([], float(stats.get("retries", 0)))
    metrics += [wait, received, retries]

    queue = GaugeMetricFamily(
        "skyfill_queue_depth", "Work not started yet: pending items and tasks.", labels=["kind"]
    )
    queue.add_metric(["items"], counts.get(ItemStatus.PENDING, 0))
    queue.add_metric(["tasks"], store.task_status_counts().get(TaskStatus.PENDING, 0))
    metrics.append(queue)

    alive = GaugeMetricFamily("skyfill_workers_alive", "Runners/workers with a fresh heartbeat.")
    workers = workers_of(store)
    now = time.time()
    if workers is not None:
        alive.add_metric(
            [],
            sum(
                1
                for w in workers
                if w.get("live", now - (w.get("heartbeat_at") or 0) < SILENT_AFTER)
            ),
        )
    else:
        alive.add_metric([], 1 if is_live(job, stale_after=SILENT_AFTER) else 0)
    metrics.append(alive)
    if job.heartbeat_at is not None:
        age = GaugeMetricFamily(
            "skyfill_heartbeat_age_seconds", "Seconds since the runner's last heartbeat."
        )
        age.add_metric([], max(0.0, now - job.heartbeat_at))
        metrics.append(age)
    return metrics


def _host_metrics(hosts: dict[str, dict[str, Any]]) -> list[Metric]:
    requests = CounterMetricFamily(
        "skyfill_requests", "HTTP requests by host and answer code.", labels=["host", "code"]
    )
    limited = CounterMetricFamily("skyfill_rate_limited", "429 answers by host.", labels=["host"])
    seconds = HistogramMetricFamily(
        "skyfill_request_seconds",
        "Seconds from sending a request to its answer's headers.",
        labels=["host"],
    )
    for name, h in sorted(hosts.items()):
        for code, n in sorted((h.get("by_status") or {}).items()):
            requests.add_metric([name, str(code)], n)
        if h.get("no_answer"):
            requests.add_metric([name, "none"], h["no_answer"])
        limited.add_metric([name], h.get("rate_limited", 0))
        hist = LatencyHistogram.from_dict(h.get("latency"))
        cumulative, buckets = 0, []
        for bound, n in zip((*BOUNDS, float("inf")), hist.counts, strict=True):
            cumulative += n
            buckets.append(("+Inf" if bound == float("inf") else repr(bound), cumulative))
        seconds.add_metric([name], buckets, sum_value=hist.total)
    return [requests, limited, seconds]


class MetricsServer:
    """`/metrics` for one job on `host:port` (a thread of this process); `stop()` ends it."""

    def __init__(self, source: JobSource, job_id: str, port: int, host: str = "127.0.0.1") -> None:
        self.collector = JobCollector(source, job_id)
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self.collector)
        try:
            self._server, self._thread = start_http_server(port, host, self.registry)
        except OSError as exc:
            raise UsageError(f"cannot serve metrics on {host}:{port}: {exc.strerror}") from None
        self.port = self._server.server_address[1]
        self.url = f"http://{host}:{self.port}/metrics"
        log.info("metrics on %s", self.url, extra={"event": "metrics_serving", "url": self.url})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self.collector.close()

"""Progress shown while a job runs: the engine's `JobObserver` as JSON log lines or a rich
live view (`NullObserver`, from the engine, shows nothing).

Both visible implementations show the same facts (`_Tally.facts()`): DIDs done/total,
DIDs/s and records/s (over the last `RECENT_SECONDS` and on average this run), ETA,
counts per status, retries, 429s, requests, the busiest and the most throttled hosts,
and memory (RSS). The per-host and memory facts come from the handler's live statistics,
which the runner hands over with `stats()` each time it publishes them.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections import Counter, deque
from typing import Any

from skyfill.engine.model import ItemResult
from skyfill.engine.observer import JobObserver, NullObserver

RECENT_SECONDS = 30.0
HOSTS_SHOWN = 3
log = logging.getLogger("skyfill.progress")


class _Tally:
    """Counters shared by the visible progress implementations."""

    def __init__(self) -> None:
        self.job_id = ""
        self.total = 0
        self.done = 0
        self.records = 0
        self.retries = 0
        self.by_status: Counter[str] = Counter()
        self.started = time.monotonic()
        self.done_at_start = 0
        self.handler_stats: dict[str, Any] = {}
        self._points: deque[tuple[float, int, int]] = deque()
        self._lock = threading.Lock()

    def start(self, job_id: str, total: int, already_done: int) -> None:
        self.job_id, self.total, self.done = job_id, total, already_done
        self.done_at_start = already_done
        self.started = time.monotonic()
        self._mark(self.started)

    def add(self, result: ItemResult, rows: int) -> None:
        with self._lock:
            self.done += 1
            self.records += rows
            self.retries += max(0, result.attempts - 1)
            self.by_status[result.status] += 1
        self._mark(time.monotonic())

    def stats(self, data: dict[str, Any]) -> None:
        self.handler_stats = data
        self._mark(time.monotonic())

    def _mark(self, now: float) -> None:
        """Remember (time, done, records) at most twice a second, for the recent rates."""
        with self._lock:
            points = self._points
            if points and now - points[-1][0] < 0.5:
                return
            points.append((now, self.done, self.records))
            while len(points) > 2 and now - points[1][0] > RECENT_SECONDS:
                points.popleft()

    def facts(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            done, records, by_status = self.done, self.records, dict(self.by_status)
            first = self._points[0] if self._points else (self.started, done, records)
        elapsed = max(now - self.started, 1e-9)
        rate = (done - self.done_at_start) / elapsed
        span = now - first[0]
        recent = (done - first[1]) / span if span >= 1.0 else rate
        recent_records = (records - first[2]) / span if span >= 1.0 else records / elapsed
        remaining = self.total - done
        basis = recent if recent > 0 else rate
        stats = self.handler_stats
        totals = stats.get("totals") or {}
        memory = stats.get("memory") or {}
        return {
            "job_id": self.job_id,
            "done": done,
            "total": self.total,
            "elapsed_s": round(elapsed, 1),
            "dids_per_s": round(rate, 2),
            "dids_per_s_recent": round(recent, 2),
            "records": records,
            "records_per_s": round(records / elapsed, 1),
            "records_per_s_recent": round(recent_records, 1),
            "eta_s": round(remaining / basis, 1) if basis > 0 and remaining > 0 else None,
            "by_status": by_status,
            "retries": self.retries,
            "requests": totals.get("requests", 0),
            "rate_limited": totals.get("rate_limited", 0),
            "bytes": totals.get("bytes", 0),
            "rss": memory.get("rss"),
            **top_hosts(stats.get("hosts") or {}),
        }


def top_hosts(hosts: dict[str, dict], shown: int = HOSTS_SHOWN) -> dict[str, list[dict]]:
    """The busiest hosts (most requests) and the most throttled ones (most 429s)."""

    def row(name: str, h: dict) -> dict:
        return {
            "host": name,
            "requests": h.get("requests", 0),
            "rate_limited": h.get("rate_limited", 0),
            "rate_per_s": h.get("rate_per_s"),
            "p95_ms": h.get("p95_ms"),
        }

    busiest = sorted(hosts.items(), key=lambda kv: -kv[1].get("requests", 0))[:shown]
    throttled = sorted(
        (kv for kv in hosts.items() if kv[1].get("rate_limited", 0) > 0),
        key=lambda kv: -kv[1]["rate_limited"],
    )[:shown]
    return {
        "busiest_hosts": [row(n, h) for n, h in busiest],
        "throttled_hosts": [row(n, h) for n, h in throttled],
    }


class LogProgress(_Tally):
    """One JSON log line (event `progress`) every `interval` seconds, for CI, nohup, Slurm,
    from a timer thread (so a job that is stuck still says so), and a last one at the end.

    Lines go through the `skyfill.progress` logger at INFO, so they follow `--log-level`
    and the log format (JSON off a terminal)."""

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self._interval = interval
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, job_id: str, total: int, already_done: int) -> None:
        super().start(job_id, total, already_done)
        self._stopping.clear()
        self._thread = threading.Thread(target=self._tick, name="skyfill-progress", daemon=True)
        self._thread.start()

    def _tick(self) -> None:
        while not self._stopping.wait(self._interval):
            self._emit()

    def item_done(self, result: ItemResult, rows: int) -> None:
        self.add(result, rows)

    def _emit(self) -> None:
        facts = self.facts()
        log.info(f"{facts['done']}/{facts['total']} done", extra={"event": "progress", **facts})

    def stop(self) -> None:
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join(timeout=5)
        self._thread = None
        self._emit()


class RichProgress(_Tally):
    """A live view on the terminal: a bar, rates, ETA, statuses, hosts and memory."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.live import Live

        self._live = Live(
            self,
            console=Console(stderr=True),
            refresh_per_second=4,
            transient=False,
            redirect_stderr=True,
        )

    def __rich__(self) -> Any:
        from skyfill.monitor.view import render_progress

        return render_progress(self.facts())

    def start(self, job_id: str, total: int, already_done: int) -> None:
        super().start(job_id, total, already_done)
        self._live.start()

    def item_done(self, result: ItemResult, rows: int) -> None:
        self.add(result, rows)

    def stop(self) -> None:
        self._live.stop()


def make_progress(kind: str, interval: float = 10.0) -> JobObserver:
    """`auto` picks rich on a terminal and log lines elsewhere; `none` shows nothing."""
    if kind == "none":
        return NullObserver()
    if kind == "rich" or (kind == "auto" and sys.stderr.isatty()):
        return RichProgress()
    return LogProgress(interval)

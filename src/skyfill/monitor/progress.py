"""The progress seam and its implementations: null, JSON log lines, and a rich live bar."""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, Protocol, TextIO

import orjson

from skyfill.engine.model import ItemResult


class Progress(Protocol):
    def start(self, job_id: str, total: int, already_done: int) -> None: ...

    def item_done(self, result: ItemResult, rows: int) -> None: ...

    def stats(self, data: dict[str, Any]) -> None:
        """The handler's live statistics, as just published (every couple of seconds)."""
        ...

    def stop(self) -> None: ...


class NullProgress:
    def start(self, job_id: str, total: int, already_done: int) -> None:
        return None

    def item_done(self, result: ItemResult, rows: int) -> None:
        return None

    def stats(self, data: dict[str, Any]) -> None:
        return None

    def stop(self) -> None:
        return None


class _Tally:
    """Counters shared by the visible progress implementations."""

    def __init__(self) -> None:
        self.job_id = ""
        self.total = 0
        self.done = 0
        self.records = 0
        self.by_status: Counter[str] = Counter()
        self.started = time.monotonic()
        self.done_at_start = 0

    def start(self, job_id: str, total: int, already_done: int) -> None:
        self.job_id, self.total, self.done = job_id, total, already_done
        self.done_at_start = already_done
        self.started = time.monotonic()

    def stats(self, data: dict[str, Any]) -> None:
        return None

    def add(self, result: ItemResult, rows: int) -> None:
        self.done += 1
        self.records += rows
        self.by_status[result.status] += 1

    def facts(self) -> dict:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        fresh = self.done - self.done_at_start
        rate = fresh / elapsed
        remaining = self.total - self.done
        return {
            "job_id": self.job_id,
            "done": self.done,
            "total": self.total,
            "dids_per_s": round(rate, 2),
            "records_per_s": round(self.records / elapsed, 1),
            "records": self.records,
            "eta_s": round(remaining / rate, 1) if rate > 0 else None,
            "by_status": dict(self.by_status),
        }


class LogProgress(_Tally):
    """One JSON line every `interval` seconds (for CI, nohup, Slurm)."""

    def __init__(self, interval: float = 10.0, stream: TextIO | None = None) -> None:
        super().__init__()
        self._interval = interval
        self._stream = stream or sys.stderr
        self._last = 0.0

    def item_done(self, result: ItemResult, rows: int) -> None:
        self.add(result, rows)
        now = time.monotonic()
        if now - self._last >= self._interval:
            self._last = now
            self._emit()

    def _emit(self) -> None:
        line = {"event": "progress", **self.facts()}
        self._stream.write(orjson.dumps(line).decode() + "\n")
        self._stream.flush()

    def stop(self) -> None:
        self._emit()


class RichProgress(_Tally):
    """A live bar with DIDs/s, records/s, ETA and counts per status."""

    def __init__(self) -> None:
        super().__init__()
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichBar

        self._bar = RichBar(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[stats]}"),
            transient=False,
        )
        self._task = None

    def start(self, job_id: str, total: int, already_done: int) -> None:
        super().start(job_id, total, already_done)
        self._bar.start()
        self._task = self._bar.add_task(job_id, total=total, completed=already_done, stats="")

    def item_done(self, result: ItemResult, rows: int) -> None:
        self.add(result, rows)
        facts = self.facts()
        statuses = " ".join(f"{k}={v}" for k, v in sorted(self.by_status.items()))
        stats = f"{facts['dids_per_s']:.1f} DIDs/s {facts['records_per_s']:.0f} rec/s {statuses}"
        self._bar.update(self._task, completed=self.done, stats=stats)

    def stop(self) -> None:
        self._bar.stop()


def make_progress(kind: str, interval: float = 10.0) -> Progress:
    """`auto` picks rich on a terminal and log lines elsewhere; `none` shows nothing."""
    if kind == "none":
        return NullProgress()
    if kind == "rich" or (kind == "auto" and sys.stderr.isatty()):
        return RichProgress()
    return LogProgress(interval)

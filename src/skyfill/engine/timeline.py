"""The job's recorded timeline: a sample of its counters every few seconds, in the state store.

A sample is a plain JSON object:

    t        epoch seconds           run      the runner that took it (`host:pid`)
    status   the job's status        phase    the job's phase
    items    items per status (pending included: the state store's counts, all runs)
    tasks    tasks per status
    ...      whatever the handler's optional `sample_stats()` adds (for a backfill:
             records, requests, 429s, bytes, per-host summaries). These counters start
             at zero with each run: a consumer takes differences within one `run`.

Samples are taken when the runner publishes its statistics, at most every
`sample_interval` seconds, and more sparsely in a long job (never more than about
`MAX_POINTS` over the job's life), so the timeline stays small enough to plot whole.
"""

from __future__ import annotations

import time
from typing import Any

from skyfill.engine.handler import Handler
from skyfill.engine.state.base import StateStore

MAX_POINTS = 10_000


class Timeline:
    def __init__(self, handler: Handler, store: StateStore, interval: float, run: str) -> None:
        self._handler = handler
        self._store = store
        self._interval = interval
        self._run = run
        self._last = float("-inf")
        self._force = False

    def may_be_due(self) -> bool:
        """Whether a sample may be due now (cheap, no store read): the handler's part is
        taken only then, not at every publication of the statistics."""
        if self._force:
            return True
        return self._interval > 0 and time.time() - self._last >= self._interval

    def force_next(self) -> None:
        """Take the next sample whatever the interval (e.g. the last one of a run)."""
        self._force = True

    def handler_sample(self) -> dict[str, Any]:
        """What the handler adds to a sample (read where its counters change: the loop)."""
        extra = getattr(self._handler, "sample_stats", None)
        return extra() if extra is not None else {}

    def maybe_sample(
        self, force: bool = False, handler_sample: dict[str, Any] | None = None
    ) -> dict[str, Any] | None:
        """Record a sample if one is due (or `force`); returns it, or None.
        `handler_sample`: the handler's part, if already taken (else it is taken here)."""
        if self._interval <= 0 and not (force or self._force):
            return None
        job = self._store.job()
        if job is None:
            return None
        now = time.time()
        every = max(self._interval, (now - job.created_at) / MAX_POINTS)
        if not (force or self._force) and now - self._last < every:
            return None
        self._force = False
        self._last = now
        sample: dict[str, Any] = {
            "t": now,
            "run": self._run,
            "status": str(job.status),
            "phase": job.phase,
            "items": self._store.status_counts(),
            "tasks": self._store.task_status_counts(),
        }
        sample.update(self.handler_sample() if handler_sample is None else handler_sample)
        self._store.append_sample(sample)
        return sample

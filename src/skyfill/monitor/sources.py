"""Where the jobs to watch live: a workdir of SQLite state stores, or a Redis server
(`monitor/redis_source.py`, imported only for a Redis URL: a local run does not load the
Redis client).

`skyfill monitor`, `dashboard`, `report` and the metrics exporter only read a job's state
store; `open_source(workdir, state)` picks the backend from the command line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from skyfill.engine.layout import JobLayout, jobs_in
from skyfill.engine.state.base import StateStore
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.errors import UsageError
from skyfill.urls import redact_url


class JobSource(Protocol):
    def describe(self) -> str:
        """Where the jobs are, for messages (never a password)."""
        ...

    def job_ids(self) -> list[str]: ...

    def open(self, job_id: str) -> contextlib.AbstractContextManager[StateStore]:
        """The job's state store (UsageError if there is no such job), closed on exit."""
        ...

    def layout(self, job_id: str) -> JobLayout | None:
        """The job's files on this machine, if they are here."""
        ...


class WorkdirSource:
    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir.resolve()

    def describe(self) -> str:
        return str(self.workdir)

    def job_ids(self) -> list[str]:
        return jobs_in(self.workdir)

    def layout(self, job_id: str) -> JobLayout:
        return JobLayout(self.workdir, job_id)

    @contextlib.contextmanager
    def open(self, job_id: str) -> Iterator[StateStore]:
        layout = self.layout(job_id)
        if "/" in job_id or not layout.state_db.exists():
            raise UsageError(f"no job {job_id} in {self.workdir}")
        store = SqliteStateStore(layout.state_db)
        try:
            yield store
        finally:
            store.close()


def open_source(workdir: Path, state: str | None) -> JobSource:
    """`--state redis://...` names a Redis server; otherwise the jobs are in `workdir`."""
    if state is None:
        return WorkdirSource(workdir)
    if state.startswith(("redis://", "rediss://", "unix://")):
        from skyfill.monitor.redis_source import RedisSource

        return RedisSource(state, workdir)
    raise UsageError(f"--state {redact_url(state)!r}: give a redis:// URL (or use --workdir)")


def pick_job(source: JobSource, job_id: str | None) -> str:
    """`job_id`, or else the job that is running (the most recently updated one)."""
    if job_id is not None:
        return job_id
    best: tuple[bool, float, str] | None = None
    for candidate in source.job_ids():
        with source.open(candidate) as store:
            job = store.job()
        if job is None:
            continue
        key = (job.status in ("running", "aggregating"), job.updated_at, candidate)
        best = key if best is None or key > best else best
    if best is None:
        raise UsageError(f"no job in {source.describe()}")
    return best[2]

"""Where the jobs to watch live: a workdir of SQLite state stores, or a Redis server.

`skyfill monitor`, `dashboard`, `report` and the metrics exporter only read a job's state
store; `open_source(workdir, state)` picks the backend from the command line.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import redis

from skyfill.engine.layout import JobLayout, jobs_in
from skyfill.engine.state.base import StateStore
from skyfill.engine.state.redis import RedisStateStore
from skyfill.engine.state.redis_keys import JOB_KEY_PATTERN, job_id_of
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.errors import UsageError
from skyfill.storage.replica import is_url
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


class RedisSource:
    def __init__(self, url: str, workdir: Path | None = None) -> None:
        self.url = url
        self.workdir = workdir.resolve() if workdir is not None else None

    def describe(self) -> str:
        return redact_url(self.url)

    def job_ids(self) -> list[str]:
        client = redis.Redis.from_url(self.url, decode_responses=True)
        try:
            found = {job_id_of(key) for key in client.scan_iter(match=JOB_KEY_PATTERN)}
        except redis.RedisError as exc:
            raise UsageError(f"cannot read jobs from {self.describe()}: {exc}") from None
        finally:
            client.close()
        return sorted(j for j in found if j)

    def layout(self, job_id: str) -> JobLayout | None:
        """The job's directory: --workdir if given, else where `skyfill submit` put it
        (when that is a local path)."""
        if self.workdir is not None:
            return JobLayout(self.workdir, job_id)
        try:
            with redis.Redis.from_url(self.url, decode_responses=True) as client:
                entry = RedisStateStore.registered_jobs(client).get(job_id)
        except redis.RedisError:
            return None
        if entry is None or is_url(entry["workdir"]):
            return None
        return JobLayout(Path(entry["workdir"]), job_id)

    @contextlib.contextmanager
    def open(self, job_id: str) -> Iterator[StateStore]:
        store = RedisStateStore.from_url(self.url, job_id, retries=1)  # a viewer: no waiting
        try:
            try:
                exists = store.job() is not None
            except redis.RedisError as exc:
                raise UsageError(f"cannot read {self.describe()}: {exc}") from None
            if not exists:
                raise UsageError(f"no job {job_id} in {self.describe()}")
            yield store
        finally:
            store.close()


def open_source(workdir: Path, state: str | None) -> JobSource:
    """`--state redis://...` names a Redis server; otherwise the jobs are in `workdir`."""
    if state is None:
        return WorkdirSource(workdir)
    if state.startswith(("redis://", "rediss://", "unix://")):
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

"""The jobs of a Redis server, as `skyfill monitor`, `dashboard`, `report` and the metrics
exporter read them (the `JobSource` of `--state redis://…`)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import redis

from skyfill.engine.layout import JobLayout
from skyfill.engine.state.base import StateStore
from skyfill.engine.state.redis import RedisStateStore
from skyfill.engine.state.redis_keys import JOB_KEY_PATTERN, job_id_of
from skyfill.errors import UsageError
from skyfill.storage.replica import is_url
from skyfill.urls import redact_url


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

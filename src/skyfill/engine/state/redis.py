"""The distributed state store: a job's state in Redis, shared by many worker machines.

Same semantics as `SqliteStateStore` (the contract tests in tests/engine/test_state_contract.py
run both through the same assertions). Key names live in `redis_keys`.

The store is assembled from one part per concept: planning (`redis_plan`), tasks and the
claims that fence them (`redis_tasks`), items (`redis_items`), the job registry and
worker heartbeats (`redis_workers`), over the transaction helpers (`redis_tx`). The
task queue itself is engine/distributed/redis_queue.py.

Atomicity and outages: see `redis_tx`.

Durability is the server's: run Redis with `appendonly yes` (and `appendfsync everysec` or
`always`) for a job to survive a Redis restart.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
import redis
from redis.client import Pipeline

from skyfill.engine.model import JobStatus, check_job_transition
from skyfill.engine.state.base import JobRecord
from skyfill.engine.state.redis_items import RedisItems
from skyfill.engine.state.redis_plan import RedisPlans
from skyfill.engine.state.redis_tasks import RedisTasks
from skyfill.engine.state.redis_tx import (
    OUTAGE_RETRIES,
    IntegrityError,
    as_float,
    as_str,
    connect,
    to_json,
)
from skyfill.engine.state.redis_workers import RedisWorkers
from skyfill.urls import redact_url

__all__ = ["IntegrityError", "RedisStateStore"]

log = logging.getLogger(__name__)

_JOB_FIELDS = (
    "job_id",
    "job_type",
    "handler",
    "status",
    "phase",
    "config",
    "created_at",
    "updated_at",
    "item_count",
    "control",
    "heartbeat_at",
    "runner",
)


class RedisStateStore(RedisPlans, RedisTasks, RedisItems, RedisWorkers):
    """StateStore on a Redis server (or cluster): one key namespace per job."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        super().__init__(client, job_id)
        self._owns_client = False
        self._where = "redis"

    @classmethod
    def from_url(cls, url: str, job_id: str, retries: int = OUTAGE_RETRIES) -> RedisStateStore:
        """Connect to `redis://[user:password@]host:port/db` (the password is never logged)."""
        store = cls(connect(url, retries), job_id)
        store._owns_client = True
        store._where = redact_url(url)
        log.debug("redis state store for job %s at %s", job_id, store._where)
        return store

    def __repr__(self) -> str:
        return f"RedisStateStore({self._where!r}, job_id={self._keys.job_id!r})"

    def close(self) -> None:
        if self._owns_client:
            self._r.close()

    def job(self) -> JobRecord | None:
        raw = dict(
            zip(_JOB_FIELDS, map(as_str, self._r.hmget(self._keys.job, _JOB_FIELDS)), strict=True)
        )
        if raw["job_id"] is None:
            return None
        return JobRecord(
            job_id=raw["job_id"],
            job_type=raw["job_type"],
            handler=raw["handler"],
            status=JobStatus(raw["status"]),
            phase=raw["phase"],
            config=orjson.loads(raw["config"]),
            created_at=float(raw["created_at"]),
            updated_at=float(raw["updated_at"]),
            item_count=int(raw["item_count"]),
            control=raw["control"],
            heartbeat_at=as_float(raw["heartbeat_at"]),
            runner=raw["runner"],
        )

    def set_job_status(self, status: JobStatus, phase: str | None = None) -> None:
        values: dict[str, Any] = {"status": str(status), "updated_at": time.time()}
        if phase is not None:
            values["phase"] = phase

        def check(pipe: Pipeline) -> None:
            check_job_transition(JobStatus(as_str(pipe.hget(self._keys.job, "status"))), status)

        self._update_if_exists(self._keys.job, values, check=check)

    def heartbeat(self, runner: str) -> None:
        self._update_if_exists(self._keys.job, {"heartbeat_at": time.time(), "runner": runner})

    def request_control(self, action: str | None) -> None:
        self._update_if_exists(self._keys.job, {"control": action, "updated_at": time.time()})

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        self._r.hset(self._keys.stats, name, to_json(data))

    def get_stats(self, name: str) -> dict[str, Any]:
        raw = self._r.hget(self._keys.stats, name)
        return orjson.loads(raw) if raw else {}

    def append_sample(self, sample: dict[str, Any]) -> None:
        sample = {"t": time.time(), **sample}
        self._r.zadd(self._keys.samples, {to_json(sample): float(sample["t"])})

    def samples(self, since: float | None = None, last: int | None = None) -> list[dict[str, Any]]:
        low = "-inf" if since is None else f"({since!r}"
        if last is None:
            raw: list[Any] = self._r.zrangebyscore(self._keys.samples, low, "+inf")
        elif last <= 0:
            raw = []
        else:
            raw = self._r.zrevrangebyscore(self._keys.samples, "+inf", low, start=0, num=last)
            raw.reverse()
        return [orjson.loads(m) for m in raw]

"""Who works on what, in Redis: the registry of jobs that `skyfill worker` serves
(outside any job's keys) and each worker's last heartbeat."""

from __future__ import annotations

import time
from typing import Any

import orjson
import redis

from skyfill.engine.state.redis_keys import JOBS_KEY
from skyfill.engine.state.redis_tx import (
    RedisBase,
    as_str,
    to_json,
)

WORKER_SILENT_SECONDS = 10.0


class RedisWorkers(RedisBase):
    def register(self, workdir: str) -> None:
        """List the job where `skyfill worker` finds work, with its job directory's root."""
        self._r.hset(
            JOBS_KEY,
            self._keys.job_id,
            to_json({"workdir": workdir, "created_at": time.time()}),
        )

    @staticmethod
    def registered_jobs(client: redis.Redis) -> dict[str, dict[str, Any]]:
        return {as_str(j): orjson.loads(v) for j, v in client.hgetall(JOBS_KEY).items()}

    def worker_heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        self._r.hset(self._keys.workers, worker_id, to_json({**info, "heartbeat_at": time.time()}))

    def workers(self) -> list[dict[str, Any]]:
        """Every worker that ever served the job, with its last heartbeat; `live` when it
        has not stopped and beat within WORKER_SILENT_SECONDS."""
        now = time.time()
        found = []
        for worker, value in self._r.hgetall(self._keys.workers).items():
            info = {"worker_id": as_str(worker), **orjson.loads(value)}
            info["live"] = (
                info.get("state") != "stopped"
                and now - info["heartbeat_at"] < WORKER_SILENT_SECONDS
            )
            found.append(info)
        return sorted(found, key=lambda w: w["worker_id"])

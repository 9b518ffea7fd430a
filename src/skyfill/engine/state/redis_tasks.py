"""Tasks in Redis: their rows, starts and finishes, segments, and the claim that fences
a run replaced by another (`claim_task`)."""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.client import Pipeline

from skyfill.engine.model import Role, Task, TaskStatus
from skyfill.engine.state.base import CLAIM, Segment, TaskTakenOver
from skyfill.engine.state.redis_tx import (
    RedisBase,
    as_float,
    as_int,
    as_str,
    to_json,
)

_TASK_FIELDS = ("task_id", "batch_id", "role", "phase", "grp", "status")
_TASK_INFO_FIELDS = (
    *_TASK_FIELDS,
    "attempts",
    "started_at",
    "finished_at",
    "output_file",
    "row_count",
    "sha256",
    "metrics",
    "error",
)


def check_owner(task_id: str, owner: Any) -> None:
    """Refuse a write by a run whose claim (`CLAIM`) is no longer the task's `owner`."""
    mine = CLAIM.get()
    if mine is not None and as_str(owner) not in (None, mine):
        raise TaskTakenOver(f"{task_id} is now worked on by {as_str(owner)}")


class RedisTasks(RedisBase):
    def _task_rows(self) -> list[list[Any]]:
        task_ids = [as_str(t) for t in self._r.lrange(self._keys.tasks, 0, -1)]
        rows = self._read(lambda p: [p.hmget(self._keys.task(t), _TASK_FIELDS) for t in task_ids])
        return [[as_str(v) for v in row] for row in rows if row[0] is not None]

    def tasks(self, phase: str | None = None, status: TaskStatus | None = None) -> list[Task]:
        return [
            Task(t, b, Role(r), p, g, TaskStatus(s))
            for t, b, r, p, g, s in self._task_rows()
            if (phase is None or p == phase) and (status is None or s == status)
        ]

    def task(self, task_id: str) -> Task | None:
        row = [as_str(v) for v in self._r.hmget(self._keys.task(task_id), _TASK_FIELDS)]
        if row[0] is None:
            return None
        t, b, r, p, g, st = row
        return Task(t, b, Role(r), p, g, TaskStatus(st))

    def task_status_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for row in self._task_rows():
            counts[row[5]] = counts.get(row[5], 0) + 1
        return counts

    def start_task(self, task_id: str) -> None:
        key = self._keys.task(task_id)

        def body(pipe: Pipeline) -> None:
            exists = pipe.exists(key)
            pipe.multi()
            if exists:
                pipe.hset(key, "status", str(TaskStatus.RUNNING))
                pipe.hincrby(key, "attempts", 1)
                pipe.hsetnx(key, "started_at", time.time())

        self._transact([key], body)

    def finish_task(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        output_file: str | None,
        row_count: int,
        sha256: str | None,
        metrics: dict[str, Any],
        error: str | None = None,
    ) -> None:
        key = self._keys.task(task_id)
        self._update_if_exists(
            key,
            {
                "status": str(status),
                "finished_at": time.time(),
                "output_file": output_file,
                "row_count": row_count,
                "sha256": sha256,
                "metrics": to_json(metrics),
                "error": error,
            },
            check=lambda pipe: check_owner(task_id, pipe.hget(key, "owner")),
        )

    def claim_task(self, task_id: str, claim: str) -> None:
        """Record `claim` (a token unique to one run of the task) as the task's owner.
        A run whose context carries another token (`CLAIM`) can commit nothing more to
        the task: its commits raise TaskTakenOver."""
        self._update_if_exists(self._keys.task(task_id), {"owner": claim})

    def task_info(self, task_id: str) -> dict[str, Any]:
        row = [as_str(v) for v in self._r.hmget(self._keys.task(task_id), _TASK_INFO_FIELDS)]
        info: dict[str, Any] = dict(zip(_TASK_INFO_FIELDS, row, strict=True))
        if info["task_id"] is None:
            return {}
        info["attempts"] = as_int(info["attempts"])
        info["row_count"] = as_int(info["row_count"])
        info["started_at"] = as_float(info["started_at"])
        info["finished_at"] = as_float(info["finished_at"])
        if info["metrics"]:
            info["metrics"] = orjson.loads(info["metrics"])
        return info

    def segments(self, task_id: str) -> list[Segment]:
        raw = self._r.hgetall(self._keys.segments(task_id))
        found = []
        for seq, value in raw.items():
            data = orjson.loads(value)
            found.append(Segment(task_id, int(seq), data["path"], int(data["rows"])))
        return sorted(found, key=lambda s: s.seq)

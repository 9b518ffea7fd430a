"""Planning in Redis: a job's creation, its phases, items added while it runs.

A plan is written in one optimistic transaction (see `redis_tx`); a planned worker task
enters the job's queue stream (`XADD`) in that same transaction, so a planned task is
always queued (engine/distributed/redis_queue.py reads it).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from redis.client import Pipeline

from skyfill.engine.model import (
    Batch,
    InvalidTransition,
    ItemStatus,
    JobStatus,
    Role,
    Task,
    check_job_transition,
    item_may_become,
)
from skyfill.engine.state.redis_tx import (
    IntegrityError,
    RedisBase,
    as_str,
    chunks,
    to_json,
)


class RedisPlans(RedisBase):
    def create_job(
        self,
        job_id: str,
        job_type: str,
        handler: str,
        config: dict[str, Any],
        batches: list[Batch],
        tasks: list[Task],
    ) -> None:
        k = self._keys
        now = time.time()
        items = [key for b in batches for key in b.items]
        phase = batches[0].phase if batches else "backfill"
        if len(set(items)) != len(items):
            raise IntegrityError("an item appears more than once in the plan")
        self._check_plan_unique(batches, tasks)

        def body(pipe: Pipeline) -> None:
            # Every key of the job is created here, and only here: if the job hash does not
            # exist, neither do its batches, tasks or items.
            if pipe.exists(k.job):
                raise IntegrityError(f"job {k.job_id} already exists")
            pipe.multi()
            pipe.hset(
                k.job,
                mapping={
                    "job_id": job_id,
                    "job_type": job_type,
                    "handler": handler,
                    "status": str(JobStatus.RUNNING),
                    "phase": phase,
                    "config": to_json(config),
                    "created_at": now,
                    "updated_at": now,
                    "item_count": len(items),
                },
            )
            self._queue_plan(pipe, batches, tasks)
            self._queue_new_items(pipe, batches)

        self._transact([k.job], body)

    @staticmethod
    def _check_plan_unique(batches: list[Batch], tasks: list[Task]) -> None:
        batch_ids = [b.batch_id for b in batches]
        task_ids = [t.task_id for t in tasks]
        if len(set(batch_ids)) != len(batch_ids):
            raise IntegrityError("a batch appears more than once in the plan")
        if len(set(task_ids)) != len(task_ids):
            raise IntegrityError("a task appears more than once in the plan")

    def _queue_plan(self, pipe: Pipeline, batches: list[Batch], tasks: list[Task]) -> None:
        k = self._keys
        for b in batches:
            pipe.hset(
                k.batch(b.batch_id),
                mapping={"phase": b.phase, "grp": b.group, "item_count": len(b.items)},
            )
        for t in tasks:
            pipe.hset(
                k.task(t.task_id),
                mapping={
                    "task_id": t.task_id,
                    "batch_id": t.batch_id,
                    "role": str(t.role),
                    "phase": t.phase,
                    "grp": t.group,
                    "status": str(t.status),
                    "attempts": 0,
                },
            )
        if tasks:
            pipe.rpush(k.tasks, *(t.task_id for t in tasks))
        for t in tasks:  # in the same transaction: a planned task is always queued
            if t.role is Role.WORKER:
                pipe.xadd(k.queue, {"task_id": t.task_id})

    def _queue_new_items(self, pipe: Pipeline, batches: list[Batch]) -> None:
        """Queue the writes that create the batches' items, pending."""
        k = self._keys
        for b in batches:
            for key in b.items:
                pipe.hset(
                    k.item(key),
                    mapping={
                        "batch_id": b.batch_id,
                        "status": ItemStatus.PENDING,
                        "retryable": 0,
                        "attempts": 0,
                    },
                )
            for chunk in chunks(b.items):
                members = dict.fromkeys(chunk, 0)
                pipe.zadd(k.batch_items(b.batch_id), members)
                pipe.zadd(k.batch_pending(b.batch_id), members)
                pipe.zadd(k.items, members)
        count = sum(len(b.items) for b in batches)
        if count:
            pipe.hincrby(k.item_status, ItemStatus.PENDING, count)

    def plan_phase(self, phase: str, batches: list[Batch], tasks: list[Task]) -> None:
        k = self._keys
        self._check_plan_unique(batches, tasks)
        keys = list(dict.fromkeys(key for b in batches for key in b.items))
        plan_keys = [k.batch(b.batch_id) for b in batches] + [k.task(t.task_id) for t in tasks]
        item_keys = [k.item(key) for key in keys]

        def body(pipe: Pipeline) -> None:
            def reads(p: Pipeline) -> None:
                p.exists(k.job)
                for name in plan_keys:
                    p.exists(name)
                for name in item_keys:
                    p.hmget(name, ["batch_id", "status"])

            got = self._read(reads)
            job_exists, taken, rows = got[0], got[1 : 1 + len(plan_keys)], got[1 + len(plan_keys) :]
            if taken and all(taken) and as_str(self._r.hget(k.job, "phase")) == phase:
                pipe.multi()
                return  # a replay of a plan that was recorded (its reply was lost)
            if any(taken):
                clash = [name for name, n in zip(plan_keys, taken, strict=True) if n]
                raise IntegrityError(f"already planned: {clash[:5]}")
            state = {
                key: (as_str(batch), as_str(status))
                for key, (batch, status) in zip(keys, rows, strict=True)
                if status is not None
            }
            _check_moves_to_pending(old for _, old in state.values())
            if job_exists:
                check_job_transition(
                    JobStatus(as_str(self._r.hget(k.job, "status"))), JobStatus.RUNNING
                )
            pipe.multi()
            self._queue_plan(pipe, batches, tasks)
            for b in batches:
                for key in b.items:
                    if key not in state:
                        continue  # like an UPDATE that matches no row
                    old_batch, old_status = state[key]
                    pipe.zrem(k.batch_items(old_batch), key)
                    pipe.zrem(k.batch_pending(old_batch), key)
                    pipe.zadd(k.batch_items(b.batch_id), {key: 0})
                    pipe.zadd(k.batch_pending(b.batch_id), {key: 0})
                    pipe.hset(
                        k.item(key), mapping={"batch_id": b.batch_id, "status": ItemStatus.PENDING}
                    )
                    if old_status != ItemStatus.PENDING:
                        pipe.hincrby(k.item_status, old_status, -1)
                        pipe.hincrby(k.item_status, ItemStatus.PENDING, 1)
                    pipe.zrem(k.completions, key)
                    pipe.zrem(k.failed, key)
                    pipe.zrem(k.failed_retryable, key)
                    state[key] = (b.batch_id, ItemStatus.PENDING)
            if job_exists:
                pipe.hset(
                    k.job,
                    mapping={
                        "phase": phase,
                        "status": str(JobStatus.RUNNING),
                        "updated_at": time.time(),
                    },
                )

        self._transact([k.job, *plan_keys, *item_keys], body)

    def add_items(self, batches: list[Batch], tasks: list[Task]) -> int:
        k = self._keys
        self._check_plan_unique(batches, tasks)
        keys = [key for b in batches for key in b.items]
        plan_keys = [k.batch(b.batch_id) for b in batches] + [k.task(t.task_id) for t in tasks]

        def body(pipe: Pipeline) -> int:
            def reads(p: Pipeline) -> None:
                p.hget(k.job, "phase")
                for name in plan_keys:
                    p.exists(name)
                for key in keys:
                    p.exists(k.item(key))

            got = self._read(reads)
            phase, taken, known = got[0], got[1 : 1 + len(plan_keys)], got[1 + len(plan_keys) :]
            if phase is None:
                raise IntegrityError(f"no job {k.job_id}")
            if any(taken):
                raise IntegrityError("already planned: a batch or task id is taken")
            if any(known) or len(set(keys)) != len(keys):
                raise IntegrityError("an item is already in the job")
            pipe.multi()
            self._queue_plan(pipe, batches, tasks)
            self._queue_new_items(pipe, batches)
            if keys:
                pipe.hincrby(k.job, "item_count", len(keys))
            return len(keys)

        return self._transact([k.job, *plan_keys, *(k.item(key) for key in keys)], body)

    def known_items(self, keys: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in chunks(keys):
            flags = self._read(lambda p, c=chunk: [p.exists(self._keys.item(key)) for key in c])
            found.update(key for key, flag in zip(chunk, flags, strict=True) if flag)
        return found


def _check_moves_to_pending(statuses: Iterable[str]) -> None:
    """A new phase takes only items whose outcome may be retried (failed ones)."""
    for status in statuses:
        if not item_may_become(status, ItemStatus.PENDING):
            raise InvalidTransition(f"an item that is {status} cannot be planned again")

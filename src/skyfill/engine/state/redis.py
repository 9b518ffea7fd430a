"""The distributed state store: a job's state in Redis, shared by many worker machines.

Same semantics as `SqliteStateStore` (the contract tests in tests/engine/test_state_contract.py
run both through the same assertions). Key names live in `redis_keys`.

Atomicity: every method that changes more than one key, or that must read before it writes
(create_job, plan_phase, commit_items, and the job/task updates that apply only to an
existing record), is an optimistic transaction: WATCH the keys whose current value decides
what to write, read them, then queue the writes in MULTI/EXEC (a redis-py pipeline with
transaction=True). If another client changed a watched key, EXEC aborts and nothing is
written; the transaction is then re-read and retried. A violated constraint (a job, batch,
task or item that already exists, a segment with the same (task_id, seq)) raises
`IntegrityError` before MULTI, so nothing changes - as a SQLite PRIMARY KEY violation rolls
the transaction back. Counters that only accumulate (status counts) use HINCRBY inside the
same MULTI/EXEC. All keys of a job share one hash tag (`{job_id}`), so this works on Redis
Cluster too.

Durability is the server's: run Redis with `appendonly yes` (and `appendfsync everysec` or
`always`) for a job to survive a Redis restart.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from contextvars import ContextVar
from typing import Any, TypeVar

import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from skyfill.engine.model import (
    Batch,
    InvalidTransition,
    ItemResult,
    ItemStatus,
    JobStatus,
    Role,
    Task,
    TaskStatus,
    check_job_transition,
    item_may_become,
)
from skyfill.engine.state.base import JobRecord, Segment, TaskTakenOver
from skyfill.engine.state.redis_keys import JOBS_KEY, QUEUE_GROUP, RedisKeys
from skyfill.urls import redact_url

log = logging.getLogger(__name__)

T = TypeVar("T")

FAILED_ITEM = "failed"
WORKER_SILENT_SECONDS = 10.0
OUTAGE_RETRIES = 40
OUTAGE_BACKOFF_CAP = 3.0
"""A command retries while Redis is unreachable (a restart): up to 40 times, waiting up to
3 s between tries (about 2 minutes in all), before the error reaches the caller."""
_CHUNK = 1000
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
_ITEM_FIELDS = ("status", "error_class", "error", "retryable", "attempts", "data", "metrics")


CLAIM: ContextVar[str | None] = ContextVar("skyfill_claim", default=None)
"""The claim token of the task run in this context (distributed mode; see claim_task)."""


class IntegrityError(Exception):
    """A write would break a uniqueness constraint (the Redis twin of sqlite3.IntegrityError);
    nothing was written."""


def _s(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _json(value: Any) -> str:
    return orjson.dumps(value).decode()


class RedisStateStore:
    """StateStore on a Redis server (or cluster): one key namespace per job."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        self._r = client
        self._keys = RedisKeys(job_id)

        self._owns_client = False
        self._where = "redis"

    @classmethod
    def from_url(cls, url: str, job_id: str, retries: int = OUTAGE_RETRIES) -> RedisStateStore:
        """Connect to `redis://[user:password@]host:port/db` (the password is never logged)."""
        client = redis.Redis.from_url(
            url,
            decode_responses=True,
            retry=Retry(ExponentialBackoff(cap=OUTAGE_BACKOFF_CAP, base=0.05), retries),
            retry_on_error=[redis.ConnectionError, redis.TimeoutError],
            health_check_interval=30,
        )
        store = cls(client, job_id)
        store._owns_client = True
        store._where = redact_url(url)
        log.debug("redis state store for job %s at %s", job_id, store._where)
        return store

    def __repr__(self) -> str:
        return f"RedisStateStore({self._where!r}, job_id={self._keys.job_id!r})"

    def close(self) -> None:
        if self._owns_client:
            self._r.close()

    def _transact(self, watch: list[str], body: Callable[[Pipeline], T]) -> T:
        """Run `body` as an optimistic transaction over `watch`; retry when EXEC aborts.

        `body` reads what it needs (the watched keys are watched by then), raises to abort
        without writing, or calls `pipe.multi()` and queues its writes."""
        while True:
            with self._r.pipeline(transaction=True) as pipe:
                try:
                    if watch:
                        pipe.watch(*watch)
                    result = body(pipe)
                    pipe.execute()
                    return result
                except redis.WatchError:
                    continue

    def _read(self, queue: Callable[[Pipeline], object]) -> list[Any]:
        """Run queued reads in one round trip (no transaction)."""
        pipe = self._r.pipeline(transaction=False)
        queue(pipe)
        return pipe.execute()

    def _update_if_exists(
        self,
        key: str,
        values: dict[str, Any],
        incr: dict[str, int] | None = None,
        check: Callable[[Pipeline], None] | None = None,
    ) -> None:
        """Set `values` (None deletes the field) and add `incr` on the hash `key`, only if it
        exists (an UPDATE that matches no row); `check` may refuse, on the watched key."""

        def body(pipe: Pipeline) -> None:
            if not pipe.exists(key):
                pipe.multi()
                return
            if check is not None:
                check(pipe)
            pipe.multi()
            _hset(pipe, key, values)
            for name, amount in (incr or {}).items():
                pipe.hincrby(key, name, amount)

        self._transact([key], body)

    # -- job ------------------------------------------------------------------------------

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
                    "config": _json(config),
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
            for chunk in _chunks(b.items):
                members = dict.fromkeys(chunk, 0)
                pipe.zadd(k.batch_items(b.batch_id), members)
                pipe.zadd(k.batch_pending(b.batch_id), members)
                pipe.zadd(k.items, members)
        count = sum(len(b.items) for b in batches)
        if count:
            pipe.hincrby(k.item_status, ItemStatus.PENDING, count)

    def job(self) -> JobRecord | None:
        raw = dict(
            zip(_JOB_FIELDS, map(_s, self._r.hmget(self._keys.job, _JOB_FIELDS)), strict=True)
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
            heartbeat_at=_float(raw["heartbeat_at"]),
            runner=raw["runner"],
        )

    def set_job_status(self, status: JobStatus, phase: str | None = None) -> None:
        values: dict[str, Any] = {"status": str(status), "updated_at": time.time()}
        if phase is not None:
            values["phase"] = phase

        def check(pipe: Pipeline) -> None:
            check_job_transition(JobStatus(_s(pipe.hget(self._keys.job, "status"))), status)

        self._update_if_exists(self._keys.job, values, check=check)

    def heartbeat(self, runner: str) -> None:
        self._update_if_exists(self._keys.job, {"heartbeat_at": time.time(), "runner": runner})

    def request_control(self, action: str | None) -> None:
        self._update_if_exists(self._keys.job, {"control": action, "updated_at": time.time()})

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
            if taken and all(taken) and _s(self._r.hget(k.job, "phase")) == phase:
                pipe.multi()
                return  # a replay of a plan that was recorded (its reply was lost)
            if any(taken):
                clash = [name for name, n in zip(plan_keys, taken, strict=True) if n]
                raise IntegrityError(f"already planned: {clash[:5]}")
            state = {
                key: (_s(batch), _s(status))
                for key, (batch, status) in zip(keys, rows, strict=True)
                if status is not None
            }
            _check_moves_to_pending(old for _, old in state.values())
            if job_exists:
                check_job_transition(
                    JobStatus(_s(self._r.hget(k.job, "status"))), JobStatus.RUNNING
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
        for chunk in _chunks(keys):
            flags = self._read(lambda p, c=chunk: [p.exists(self._keys.item(key)) for key in c])
            found.update(key for key, flag in zip(chunk, flags, strict=True) if flag)
        return found

    # -- distributed mode: registry, queue, leases, worker heartbeats -------------------------

    @property
    def client(self) -> redis.Redis:
        return self._r

    @property
    def keys(self) -> RedisKeys:
        return self._keys

    def register(self, workdir: str) -> None:
        """List the job where `skyfill worker` finds work, with its job directory's root."""
        self._r.hset(
            JOBS_KEY,
            self._keys.job_id,
            _json({"workdir": workdir, "created_at": time.time()}),
        )

    @staticmethod
    def registered_jobs(client: redis.Redis) -> dict[str, dict[str, Any]]:
        return {_s(j): orjson.loads(v) for j, v in client.hgetall(JOBS_KEY).items()}

    def requeue_unfinished(self) -> int:
        """Put every unfinished worker task of the current phase back in the queue (after a
        failure or a stop): the old queue and its pending claims are dropped."""
        k = self._keys
        job = self.job()
        if job is None:
            return 0
        todo = [
            t.task_id
            for t in self.tasks(job.phase)
            if t.status is not TaskStatus.DONE and t.role is Role.WORKER
        ]
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(k.queue)
        for task_id in todo:
            pipe.xadd(k.queue, {"task_id": task_id})
        pipe.xgroup_create(k.queue, QUEUE_GROUP, id="0", mkstream=True)
        pipe.execute()
        return len(todo)

    def worker_heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        self._r.hset(self._keys.workers, worker_id, _json({**info, "heartbeat_at": time.time()}))

    def workers(self) -> list[dict[str, Any]]:
        """Every worker that ever served the job, with its last heartbeat; `live` when it
        has not stopped and beat within WORKER_SILENT_SECONDS."""
        now = time.time()
        found = []
        for worker, value in self._r.hgetall(self._keys.workers).items():
            info = {"worker_id": _s(worker), **orjson.loads(value)}
            info["live"] = (
                info.get("state") != "stopped"
                and now - info["heartbeat_at"] < WORKER_SILENT_SECONDS
            )
            found.append(info)
        return sorted(found, key=lambda w: w["worker_id"])

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        self._r.hset(self._keys.stats, name, _json(data))

    def get_stats(self, name: str) -> dict[str, Any]:
        raw = self._r.hget(self._keys.stats, name)
        return orjson.loads(raw) if raw else {}

    def append_sample(self, sample: dict[str, Any]) -> None:
        sample = {"t": time.time(), **sample}
        self._r.zadd(self._keys.samples, {_json(sample): float(sample["t"])})

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

    # -- tasks ----------------------------------------------------------------------------

    def _task_rows(self) -> list[list[Any]]:
        task_ids = [_s(t) for t in self._r.lrange(self._keys.tasks, 0, -1)]
        rows = self._read(lambda p: [p.hmget(self._keys.task(t), _TASK_FIELDS) for t in task_ids])
        return [[_s(v) for v in row] for row in rows if row[0] is not None]

    def tasks(self, phase: str | None = None, status: TaskStatus | None = None) -> list[Task]:
        return [
            Task(t, b, Role(r), p, g, TaskStatus(s))
            for t, b, r, p, g, s in self._task_rows()
            if (phase is None or p == phase) and (status is None or s == status)
        ]

    def task(self, task_id: str) -> Task | None:
        row = [_s(v) for v in self._r.hmget(self._keys.task(task_id), _TASK_FIELDS)]
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
                "metrics": _json(metrics),
                "error": error,
            },
            check=lambda pipe: self._check_owner(task_id, pipe.hget(key, "owner")),
        )

    def claim_task(self, task_id: str, claim: str) -> None:
        """Record `claim` (a token unique to one run of the task) as the task's owner.
        A run whose context carries another token (`CLAIM`) can commit nothing more to
        the task: its commits raise TaskTakenOver."""
        self._update_if_exists(self._keys.task(task_id), {"owner": claim})

    def _check_owner(self, task_id: str, owner: Any) -> None:
        mine = CLAIM.get()
        if mine is not None and _s(owner) not in (None, mine):
            raise TaskTakenOver(f"{task_id} is now worked on by {_s(owner)}")

    def task_info(self, task_id: str) -> dict[str, Any]:
        row = [_s(v) for v in self._r.hmget(self._keys.task(task_id), _TASK_INFO_FIELDS)]
        info: dict[str, Any] = dict(zip(_TASK_INFO_FIELDS, row, strict=True))
        if info["task_id"] is None:
            return {}
        info["attempts"] = _int(info["attempts"])
        info["row_count"] = _int(info["row_count"])
        info["started_at"] = _float(info["started_at"])
        info["finished_at"] = _float(info["finished_at"])
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

    # -- items ----------------------------------------------------------------------------

    def batch_items(self, batch_id: str) -> list[str]:
        return [_s(m) for m in self._r.zrange(self._keys.batch_items(batch_id), 0, -1)]

    def pending_items(self, batch_id: str) -> list[str]:
        return [_s(m) for m in self._r.zrange(self._keys.batch_pending(batch_id), 0, -1)]

    def commit_items(
        self, task_id: str, results: list[ItemResult], rows: list[int], segment: Segment | None
    ) -> None:
        if len(results) != len(rows):
            raise ValueError(f"{len(results)} results but {len(rows)} row counts")
        k = self._keys
        keys = list(dict.fromkeys(r.key for r in results))
        item_keys = [k.item(key) for key in keys]
        seg_key = k.segments(segment.task_id) if segment is not None else None
        now = time.time()

        def body(pipe: Pipeline) -> None:
            def reads(p: Pipeline) -> None:
                p.hget(k.task(task_id), "owner")
                if segment is not None:
                    p.hget(k.segments(segment.task_id), str(segment.seq))
                for name in item_keys:
                    p.hmget(name, ["batch_id", "status", "attempts", "task_id"])

            got = self._read(reads)
            self._check_owner(task_id, got[0])
            got = got[1:]
            if segment is not None:
                if got[0] is not None:
                    if orjson.loads(got[0]) == {"path": segment.path, "rows": segment.rows}:
                        pipe.multi()
                        return  # a replay of a commit that happened (its reply was lost)
                    raise IntegrityError(f"segment {segment.task_id}#{segment.seq} exists")
                got = got[1:]
            state = {
                key: [_s(batch), _s(status), int(attempts or 0), _s(owner)]
                for key, (batch, status, attempts, owner) in zip(keys, got, strict=True)
                if status is not None
            }
            pipe.multi()
            if segment is not None:
                pipe.hset(
                    k.segments(segment.task_id),
                    str(segment.seq),
                    _json({"path": segment.path, "rows": segment.rows}),
                )
            for r, n in zip(results, rows, strict=True):
                if r.key not in state:
                    continue  # like an UPDATE that matches no row
                old = state[r.key]
                batch, old_status, attempts, owner = old
                attempts += r.attempts
                _hset(
                    pipe,
                    k.item(r.key),
                    {
                        "status": r.status,
                        "error_class": r.error_class,
                        "error": r.error,
                        "retryable": int(r.retryable),
                        "attempts": attempts,
                        "data": _json(r.data),
                        "metrics": _json(r.metrics),
                        "rows": n,
                        "task_id": task_id,
                        "updated_at": now,
                    },
                )
                if old_status != r.status:
                    pipe.hincrby(k.item_status, old_status, -1)
                    pipe.hincrby(k.item_status, r.status, 1)
                if r.status == ItemStatus.PENDING:
                    pipe.zadd(k.batch_pending(batch), {r.key: 0})
                    pipe.zrem(k.completions, r.key)
                else:
                    pipe.zrem(k.batch_pending(batch), r.key)
                    pipe.zadd(k.completions, {r.key: now})
                if r.status == FAILED_ITEM:
                    pipe.zadd(k.failed, {r.key: 0})
                    if r.retryable:
                        pipe.zadd(k.failed_retryable, {r.key: 0})
                    else:
                        pipe.zrem(k.failed_retryable, r.key)
                else:
                    pipe.zrem(k.failed, r.key)
                    pipe.zrem(k.failed_retryable, r.key)
                if owner != task_id:
                    if owner is not None:
                        pipe.srem(k.task_items(owner), r.key)
                    pipe.sadd(k.task_items(task_id), r.key)
                state[r.key] = [batch, r.status, attempts, task_id]

        self._transact([k.task(task_id), *([seg_key] if seg_key else []), *item_keys], body)

    def task_item_metrics(self, task_id: str) -> dict[str, float]:
        totals: dict[str, float] = {"items_processed": 0, "rows": 0}
        keys = [_s(m) for m in self._r.smembers(self._keys.task_items(task_id))]
        for chunk in _chunks(keys):
            got = self._read(
                lambda p, chunk=chunk: [
                    p.hmget(self._keys.item(key), ["metrics", "rows"]) for key in chunk
                ]
            )
            for metrics, count in got:
                totals["items_processed"] += 1
                totals["rows"] += int(count or 0)
                for name, value in orjson.loads(metrics or "{}").items():
                    totals[name] = totals.get(name, 0) + value
        return totals

    def _items(self, keys: list[str], extra: tuple[str, ...] = ()) -> list[list[Any]]:
        fields = (*_ITEM_FIELDS, *extra)
        rows = self._read(lambda p: [p.hmget(self._keys.item(key), fields) for key in keys])
        return [[key, *map(_s, row)] for key, row in zip(keys, rows, strict=True)]

    def failed_items(self, retryable_only: bool) -> list[tuple[ItemResult, str | None]]:
        index = self._keys.failed_retryable if retryable_only else self._keys.failed
        keys = [_s(m) for m in self._r.zrange(index, 0, -1)]
        found = []
        for chunk in _chunks(keys):
            found += [(_item(row[:-1]), row[-1]) for row in self._items(chunk, ("task_id",))]
        return found

    def iter_items(self) -> Iterator[ItemResult]:
        start = 0
        while True:
            keys = [_s(m) for m in self._r.zrange(self._keys.items, start, start + _CHUNK - 1)]
            for row in self._items(keys):
                yield _item(row)
            if len(keys) < _CHUNK:
                return
            start += _CHUNK

    def status_counts(self) -> dict[str, int]:
        raw = self._r.hgetall(self._keys.item_status)
        return {_s(status): int(n) for status, n in raw.items() if int(n) > 0}

    def completions_since(self, since: float) -> int:
        return int(self._r.zcount(self._keys.completions, since, "+inf"))


def _check_moves_to_pending(statuses: Iterable[str]) -> None:
    """A new phase takes only items whose outcome may be retried (failed ones)."""
    for status in statuses:
        if not item_may_become(status, ItemStatus.PENDING):
            raise InvalidTransition(f"an item that is {status} cannot be planned again")


def _hset(pipe: Pipeline, key: str, values: dict[str, Any]) -> None:
    """HSET the non-None values and HDEL the None ones (a NULL column)."""
    present: dict[FieldT, EncodableT] = {n: v for n, v in values.items() if v is not None}
    absent = [name for name, value in values.items() if value is None]
    if present:
        pipe.hset(key, mapping=present)
    if absent:
        pipe.hdel(key, *absent)


def _chunks(seq: Any, size: int = _CHUNK) -> Iterator[Any]:
    seq = list(seq)
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def _item(row: list[Any]) -> ItemResult:
    key, status, error_class, error, retryable, attempts, data, metrics = row
    return ItemResult(
        key,
        status,
        error_class,
        error,
        bool(int(retryable or 0)),
        int(attempts or 0),
        orjson.loads(data) if data else {},
        orjson.loads(metrics) if metrics else {},
    )

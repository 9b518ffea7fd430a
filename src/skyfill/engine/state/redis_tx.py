"""Redis plumbing of the state store: the client, optimistic transactions, small codecs.

Atomicity: every method that changes more than one key, or that must read before it writes
(create_job, plan_phase, commit_items, and the job/task updates that apply only to an
existing record), is an optimistic transaction (`RedisBase._transact`): WATCH the keys whose
current value decides what to write, read them, then queue the writes in MULTI/EXEC (a
redis-py pipeline with transaction=True). If another client changed a watched key, EXEC
aborts and nothing is written; the transaction is then re-read and retried. A violated
constraint (a job, batch, task or item that already exists, a segment with the same
(task_id, seq)) raises `IntegrityError` before MULTI, so nothing changes - as a SQLite
PRIMARY KEY violation rolls the transaction back. Counters that only accumulate (status
counts) use HINCRBY inside the same MULTI/EXEC. All keys of a job share one hash tag
(`{job_id}`), so this works on Redis Cluster too.

Outages: the client made by `connect` retries a command while Redis is unreachable (a
restart), with a capped exponential backoff, before the error reaches the caller.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import orjson
import redis
from redis.backoff import ExponentialBackoff
from redis.client import Pipeline
from redis.retry import Retry
from redis.typing import EncodableT, FieldT

from skyfill.engine.state.redis_keys import RedisKeys

T = TypeVar("T")

OUTAGE_RETRIES = 40
OUTAGE_BACKOFF_CAP = 3.0
"""A command retries while Redis is unreachable (a restart): up to 40 times, waiting up to
3 s between tries (about 2 minutes in all), before the error reaches the caller."""
CHUNK = 1000


class IntegrityError(Exception):
    """A write would break a uniqueness constraint (the Redis twin of sqlite3.IntegrityError);
    nothing was written."""


def connect(url: str, retries: int = OUTAGE_RETRIES) -> redis.Redis:
    """A client of `redis://[user:password@]host:port/db` that rides out a restart."""
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        retry=Retry(ExponentialBackoff(cap=OUTAGE_BACKOFF_CAP, base=0.05), retries),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        health_check_interval=30,
    )


def as_str(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def as_float(value: Any) -> float | None:
    return None if value is None else float(value)


def as_int(value: Any) -> int | None:
    return None if value is None else int(value)


def to_json(value: Any) -> str:
    return orjson.dumps(value).decode()


def hset(pipe: Pipeline, key: str, values: dict[str, Any]) -> None:
    """HSET the non-None values and HDEL the None ones (a NULL column)."""
    present: dict[FieldT, EncodableT] = {n: v for n, v in values.items() if v is not None}
    absent = [name for name, value in values.items() if value is None]
    if present:
        pipe.hset(key, mapping=present)
    if absent:
        pipe.hdel(key, *absent)


def chunks(seq: Any, size: int = CHUNK) -> Iterator[Any]:
    seq = list(seq)
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


class RedisBase:
    """A job's key namespace on one client, with the transaction helpers every part of the
    store uses."""

    def __init__(self, client: redis.Redis, job_id: str) -> None:
        self._r = client
        self._keys = RedisKeys(job_id)

    @property
    def client(self) -> redis.Redis:
        return self._r

    @property
    def keys(self) -> RedisKeys:
        return self._keys

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
            hset(pipe, key, values)
            for name, amount in (incr or {}).items():
                pipe.hincrby(key, name, amount)

        self._transact([key], body)

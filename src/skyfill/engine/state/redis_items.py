"""Items in Redis: outcomes committed with the segment holding their rows, and the
indexes (pending per batch, failed, completions by time) that answer the store's queries.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import orjson
from redis.client import Pipeline

from skyfill.engine.model import ItemResult, ItemStatus
from skyfill.engine.state.base import Segment
from skyfill.engine.state.redis_tasks import check_owner
from skyfill.engine.state.redis_tx import (
    CHUNK,
    IntegrityError,
    RedisBase,
    as_str,
    chunks,
    hset,
    to_json,
)

FAILED_ITEM = "failed"
_ITEM_FIELDS = ("status", "error_class", "error", "retryable", "attempts", "data", "metrics")


class RedisItems(RedisBase):
    def batch_items(self, batch_id: str) -> list[str]:
        return [as_str(m) for m in self._r.zrange(self._keys.batch_items(batch_id), 0, -1)]

    def pending_items(self, batch_id: str) -> list[str]:
        return [as_str(m) for m in self._r.zrange(self._keys.batch_pending(batch_id), 0, -1)]

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
            check_owner(task_id, got[0])
            got = got[1:]
            if segment is not None:
                if got[0] is not None:
                    if orjson.loads(got[0]) == {"path": segment.path, "rows": segment.rows}:
                        pipe.multi()
                        return  # a replay of a commit that happened (its reply was lost)
                    raise IntegrityError(f"segment {segment.task_id}#{segment.seq} exists")
                got = got[1:]
            state = {
                key: [as_str(batch), as_str(status), int(attempts or 0), as_str(owner)]
                for key, (batch, status, attempts, owner) in zip(keys, got, strict=True)
                if status is not None
            }
            pipe.multi()
            if segment is not None:
                pipe.hset(
                    k.segments(segment.task_id),
                    str(segment.seq),
                    to_json({"path": segment.path, "rows": segment.rows}),
                )
            for r, n in zip(results, rows, strict=True):
                if r.key not in state:
                    continue  # like an UPDATE that matches no row
                old = state[r.key]
                batch, old_status, attempts, owner = old
                attempts += r.attempts
                hset(
                    pipe,
                    k.item(r.key),
                    {
                        "status": r.status,
                        "error_class": r.error_class,
                        "error": r.error,
                        "retryable": int(r.retryable),
                        "attempts": attempts,
                        "data": to_json(r.data),
                        "metrics": to_json(r.metrics),
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
        keys = [as_str(m) for m in self._r.smembers(self._keys.task_items(task_id))]
        for chunk in chunks(keys):
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
        return [[key, *map(as_str, row)] for key, row in zip(keys, rows, strict=True)]

    def failed_items(self, retryable_only: bool) -> list[tuple[ItemResult, str | None]]:
        index = self._keys.failed_retryable if retryable_only else self._keys.failed
        keys = [as_str(m) for m in self._r.zrange(index, 0, -1)]
        found = []
        for chunk in chunks(keys):
            found += [(_item(row[:-1]), row[-1]) for row in self._items(chunk, ("task_id",))]
        return found

    def iter_items(self) -> Iterator[ItemResult]:
        start = 0
        while True:
            keys = [as_str(m) for m in self._r.zrange(self._keys.items, start, start + CHUNK - 1)]
            for row in self._items(keys):
                yield _item(row)
            if len(keys) < CHUNK:
                return
            start += CHUNK

    def status_counts(self) -> dict[str, int]:
        raw = self._r.hgetall(self._keys.item_status)
        return {as_str(status): int(n) for status, n in raw.items() if int(n) > 0}

    def completions_since(self, since: float) -> int:
        return int(self._r.zcount(self._keys.completions, since, "+inf"))


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

"""Items in Redis: outcomes committed with the segment holding their rows, and the
indexes (pending per batch, failed, completions by time) that answer the store's queries.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
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
from skyfill.failpoints import failpoint

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
        failpoint("state_commit")  # tests: a slow store (`state_commit:every:sleep=0.2`)
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
            self._queue_writes(pipe, task_id, results, rows, state, now)

        self._transact([k.task(task_id), *([seg_key] if seg_key else []), *item_keys], body)

    def _queue_writes(
        self,
        pipe: Pipeline,
        task_id: str,
        results: list[ItemResult],
        rows: list[int],
        state: dict[str, list[Any]],
        now: float,
    ) -> None:
        """Queue the items' new state: a hash each, and the indexes updated with one command
        per index (not ~8 commands per item). An item given twice ends as its last result
        says, its attempts summed, as one write after the other would leave it."""
        k = self._keys
        final: dict[str, tuple[ItemResult, int, int]] = {}
        for r, n in zip(results, rows, strict=True):
            if r.key in state:  # else: like an UPDATE that matches no row
                attempts = final[r.key][2] if r.key in final else state[r.key][2]
                final[r.key] = (r, n, attempts + r.attempts)
        counts: Counter[str] = Counter()
        index = _IndexChanges()
        for key, (r, n, attempts) in final.items():
            batch, old_status, _, owner = state[key]
            hset(
                pipe,
                k.item(key),
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
                counts[old_status] -= 1
                counts[r.status] += 1
            pending = r.status == ItemStatus.PENDING
            failed = r.status == FAILED_ITEM
            index.put(k.batch_pending(batch), key, pending)
            index.put(k.completions, key, not pending, now)
            index.put(k.failed, key, failed)
            index.put(k.failed_retryable, key, failed and r.retryable)
            if owner != task_id:
                if owner is not None:
                    index.leave(k.task_items(owner), key)
                index.join(k.task_items(task_id), key)
        for status, delta in counts.items():
            if delta:
                pipe.hincrby(k.item_status, status, delta)
        index.queue(pipe)

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

    def items_with_status(self, statuses: Collection[str]) -> Iterator[ItemResult]:
        wanted = set(statuses)
        if wanted <= {"failed"}:  # (failed items have an index of their own)
            yield from (item for item, _ in self.failed_items(False) if item.status in wanted)
            return
        yield from (item for item in self.iter_items() if item.status in wanted)

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


@dataclass
class _IndexChanges:
    """Members to add to and remove from sorted sets and sets, gathered per key."""

    added: dict[str, dict[str, float]] = field(default_factory=lambda: defaultdict(dict))
    removed: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    joined: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    left: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))

    def put(self, zset: str, member: str, present: bool, score: float = 0) -> None:
        if present:
            self.added[zset][member] = score
        else:
            self.removed[zset].append(member)

    def join(self, set_key: str, member: str) -> None:
        self.joined[set_key].append(member)

    def leave(self, set_key: str, member: str) -> None:
        self.left[set_key].append(member)

    def queue(self, pipe: Pipeline) -> None:
        for zset, members in self.removed.items():
            pipe.zrem(zset, *members)
        for zset, scores in self.added.items():
            pipe.zadd(zset, scores)
        for set_key, members in self.left.items():
            pipe.srem(set_key, *members)
        for set_key, members in self.joined.items():
            pipe.sadd(set_key, *members)


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

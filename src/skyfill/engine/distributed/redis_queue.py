"""The task queue on a Redis stream with a consumer group.

Tasks enter the stream (`XADD`) in the same transaction that plans them (the Redis state
store's `create_job`, `plan_phase`, `add_items`), so a planned task is always queued. A
worker reads new entries with `XREADGROUP ... >`; the entry then sits in the group's
pending list, owned by that worker, until `XACK`. A worker that dies leaves its entries
pending: once one has been idle longer than the visibility timeout, `XAUTOCLAIM` hands it
to another worker. Live workers reset the idle time of what they hold (`XCLAIM` with
min-idle 0, JUSTID) several times per timeout, so long tasks are never taken from them.
"""

from __future__ import annotations

from typing import cast

import redis
from redis.typing import StreamIdT

from skyfill.engine.distributed.queue import Claim
from skyfill.engine.state.redis_keys import QUEUE_GROUP, RedisKeys


class RedisTaskQueue:
    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._r = client
        self._stream = keys.queue
        self._group_ready = False

    def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            self._r.xgroup_create(self._stream, QUEUE_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    def claim(self, consumer: str) -> Claim | None:
        self._ensure_group()
        try:
            got = self._r.xreadgroup(QUEUE_GROUP, consumer, {self._stream: ">"}, count=1)
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False  # the stream was replaced (requeue): make it again
            return None
        # RESP2, the protocol skyfill's clients speak: [[stream, [(id, fields), ...]], ...]
        for _stream, entries in cast(list[tuple[str, list[tuple[str, dict]]]], got or []):
            for message_id, fields in entries:
                return Claim(_s(fields[_key(fields)]), _s(message_id))
        return None

    def reclaim(self, consumer: str, idle_seconds: float) -> Claim | None:
        self._ensure_group()
        try:
            _cursor, entries, *_deleted = self._r.xautoclaim(
                self._stream, QUEUE_GROUP, consumer, int(idle_seconds * 1000), "0-0", count=1
            )
        except redis.ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._group_ready = False
            return None
        for message_id, fields in entries:
            if fields:  # None for an entry deleted while pending
                pending = self._r.xpending_range(
                    self._stream, QUEUE_GROUP, message_id, message_id, 1
                )
                deliveries = int(pending[0]["times_delivered"]) if pending else 1
                return Claim(_s(fields[_key(fields)]), _s(message_id), deliveries)
        return None

    def extend(self, consumer: str, claims: list[Claim]) -> None:
        if not claims:
            return
        # Only entries still ours: XCLAIM would otherwise take back one that another
        # consumer reclaimed from us while we were silent.
        mine = {
            _s(entry["message_id"])
            for entry in self._r.xpending_range(
                self._stream, QUEUE_GROUP, "-", "+", len(claims) + 100, consumername=consumer
            )
        }
        ids: list[StreamIdT] = [c.message_id for c in claims if c.message_id in mine]
        if ids:
            self._r.xclaim(self._stream, QUEUE_GROUP, consumer, 0, ids, justid=True)

    def ack(self, claim: Claim) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.xack(self._stream, QUEUE_GROUP, claim.message_id)
        pipe.xdel(self._stream, claim.message_id)
        pipe.execute()

    def requeue(self, task_ids: list[str]) -> None:
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(self._stream)
        for task_id in task_ids:
            pipe.xadd(self._stream, {"task_id": task_id})
        pipe.xgroup_create(self._stream, QUEUE_GROUP, id="0", mkstream=True)
        pipe.execute()
        self._group_ready = True


def _key(fields: dict) -> str | bytes:
    return "task_id" if "task_id" in fields else b"task_id"


def _s(value: str | bytes | int) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)

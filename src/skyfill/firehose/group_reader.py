"""Reading Redis streams as one consumer of the index workers' group, after taking them
over: first every entry another consumer was given and did not acknowledge (claimed with
XAUTOCLAIM: the holder of the lease is the only reader), then this consumer's own pending
entries, then new ones. The caller acknowledges what it has saved.

A reader is stopped by cancelling the task that iterates it. redis-py 8 (8.0–8.2 at
least) can swallow a cancellation that lands just as a command's reply arrives: the
command returns as if nothing happened, and a loop of blocking reads would then run on
for ever (`skyfill index` hung at its end now and then). So every reply is checked:
one that comes back to a task being cancelled is dropped and the cancellation raised.
A dropped XREADGROUP batch loses nothing: its entries are pending for this consumer and
read again, first, by the next reader of the partition."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis

from skyfill.firehose.live_keys import GROUP

READ_COUNT = 500
BLOCK_MS = 500

T = TypeVar("T")

Entry = tuple[str, bytes, dict | None]
"""(stream key, entry id, fields — None when the entry was trimmed while pending)."""


class GroupReader:
    def __init__(self, client: aioredis.Redis, consumer: str, keys: list[str]) -> None:
        self._client = client
        self._consumer = consumer
        self._keys = keys
        self.reclaimed = 0
        self.last_entry = time.monotonic()

    async def entries(self) -> AsyncIterator[Entry]:
        for key in self._keys:
            with contextlib.suppress(aioredis.ResponseError):  # BUSYGROUP: it exists
                await _reply(self._client.xgroup_create(key, GROUP, id="0", mkstream=True))
            self.reclaimed += await self._reclaim(key)
        pending: dict[Any, Any] = dict.fromkeys(self._keys, "0")
        while pending:
            answer: Any = await _reply(
                self._client.xreadgroup(GROUP, self._consumer, pending, count=READ_COUNT)
            )
            rows = {_text(key): found for key, found in answer or []}
            for key in list(pending):
                found = rows.get(key) or []
                if not found:
                    del pending[key]
                    continue
                pending[key] = _text(found[-1][0])
                for entry_id, fields in found:
                    yield key, entry_id, fields or None
        streams: dict[Any, Any] = dict.fromkeys(self._keys, ">")
        while True:
            answer = await _reply(
                self._client.xreadgroup(
                    GROUP, self._consumer, streams, count=READ_COUNT, block=BLOCK_MS
                )
            )
            for key, found in answer or []:
                self.last_entry = time.monotonic()
                for entry_id, fields in found:
                    yield _text(key), entry_id, fields or None

    async def ack(self, key: str, entry_id: bytes) -> None:
        await _reply(self._client.xack(key, GROUP, entry_id))

    async def _reclaim(self, key: str) -> int:
        claimed, start = 0, "0-0"
        while True:
            answer: Any = await _reply(
                self._client.xautoclaim(key, GROUP, self._consumer, min_idle_time=0, start_id=start)
            )
            start, found = _text(answer[0]), answer[1]
            claimed += len(found)
            if start == "0-0":
                return claimed


async def _reply(command: Awaitable[T]) -> T:
    """The command's reply, unless the task was cancelled meanwhile (see the module's
    docstring): then the cancellation, as if redis-py had raised it."""
    answer = await command
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError
    return answer


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

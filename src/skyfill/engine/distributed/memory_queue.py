"""The task queue in one process: waiting tasks in order, claims with their idle time.

The same semantics as `redis_queue` (the contract tests run both): a claimed task stays
with its consumer until acknowledged; one idle longer than the visibility timeout goes to
the next consumer that reclaims; extending resets the idle time of a consumer's own
claims only. Time is read from an injectable clock, so idle reclaim is tested without
sleeping.

With `source` (the store's unfinished worker tasks, see `queue.unfinished_worker_tasks`), a
task the store has planned joins the queue the next time a consumer claims, once: the
store has no queue to write to in the plan's transaction, as Redis does.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from skyfill.engine.distributed.queue import Claim


@dataclass(slots=True)
class _Pending:
    task_id: str
    consumer: str
    since: float
    deliveries: int


class MemoryTaskQueue:
    def __init__(
        self,
        clock: Callable[[], float] = time.monotonic,
        source: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self.clock = clock
        self._source = source
        self._seen: set[str] = set()
        self._waiting: deque[tuple[str, str]] = deque()
        self._pending: dict[str, _Pending] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    def _put(self, task_id: str) -> None:
        self._seen.add(task_id)
        self._waiting.append((f"{next(self._ids)}-0", task_id))

    def _pull(self) -> None:
        if self._source is not None:
            for task_id in self._source():
                if task_id not in self._seen:
                    self._put(task_id)

    def claim(self, consumer: str) -> Claim | None:
        with self._lock:
            self._pull()
            if not self._waiting:
                return None
            message_id, task_id = self._waiting.popleft()
            self._pending[message_id] = _Pending(task_id, consumer, self.clock(), 1)
            return Claim(task_id, message_id)

    def reclaim(self, consumer: str, idle_seconds: float) -> Claim | None:
        with self._lock:
            now = self.clock()
            for message_id, entry in self._pending.items():
                if now - entry.since >= idle_seconds:
                    entry.consumer, entry.since = consumer, now
                    entry.deliveries += 1
                    return Claim(entry.task_id, message_id, entry.deliveries)
            return None

    def extend(self, consumer: str, claims: list[Claim]) -> None:
        with self._lock:
            now = self.clock()
            for claim in claims:
                entry = self._pending.get(claim.message_id)
                if entry is not None and entry.consumer == consumer:
                    entry.since = now

    def ack(self, claim: Claim) -> None:
        with self._lock:
            self._pending.pop(claim.message_id, None)

    def requeue(self, task_ids: list[str]) -> None:
        with self._lock:
            self._waiting.clear()
            self._pending.clear()
            for task_id in task_ids:
                self._put(task_id)

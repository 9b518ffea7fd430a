"""The order in which a runner opens the tasks of a phase: oldest first, by lanes.

A lane is what a task's items have in common that limits how fast they can go: for a
backfill's discovered batches, the host whose repos they are (discovery names it when it
adds a page; `DiscoveryContext.add(lane=...)`). At most `per_lane` tasks of one lane are
open at once; the next task is the oldest one whose lane has room. So a host with millions
of repos and a limit of 10 requests/s keeps two tasks open, always, and never fills the
task window with thousands of tasks that wait on its limit while the other hosts' tasks
queue behind them. Tasks without a lane (a DID file, retry phases, a resumed job's tasks)
are never held back: among themselves they go first-in, first-out, as before lanes.

    lanes = TaskLanes()
    lanes.add(task, "https://pds.example")
    task, lane = lanes.pop()   # None instead: every waiting task's lane is full
    lanes.done(lane)           # when that task has finished
"""

from __future__ import annotations

import heapq
import itertools
from collections import Counter, deque
from typing import Generic, TypeVar

T = TypeVar("T")

OPEN_PER_LANE = 2
"""Tasks of one lane open at once: one working while the next one's items queue behind
it, so that the lane's host never waits for a task to be opened."""


class TaskLanes(Generic[T]):
    def __init__(self, per_lane: int = OPEN_PER_LANE) -> None:
        self.per_lane = per_lane
        self._lanes: dict[str | None, deque[tuple[int, T]]] = {}
        self._open: Counter[str | None] = Counter()
        self._ready: list[tuple[int, int, str | None]] = []
        """(seq of a lane's oldest task, tie-break, lane) for lanes that may open one;
        entries go stale when the lane's head or room changes, and are skipped."""
        self._seq = itertools.count()
        self._size = 0

    def __len__(self) -> int:
        return self._size

    def add(self, task: T, lane: str | None = None) -> None:
        """Queue `task` behind every task added before it."""
        queue = self._lanes.setdefault(lane, deque())
        queue.append((next(self._seq), task))
        self._size += 1
        if len(queue) == 1:
            self._offer(lane)

    def pop(self) -> tuple[T, str | None] | None:
        """The oldest task whose lane has room, with its lane (counted as open); None if
        there is none."""
        while self._ready:
            seq, _, lane = heapq.heappop(self._ready)
            queue = self._lanes.get(lane)
            if not queue or queue[0][0] != seq or not self._has_room(lane):
                continue  # stale
            _, task = queue.popleft()
            self._size -= 1
            self._open[lane] += 1
            if queue:
                self._offer(lane)
            else:
                del self._lanes[lane]
            return task, lane
        return None

    def done(self, lane: str | None = None) -> None:
        """A task of `lane` has finished (or stopped): its lane has room again."""
        if self._open[lane] > 0:
            self._open[lane] -= 1
        if not self._open[lane]:
            del self._open[lane]
        self._offer(lane)

    def _has_room(self, lane: str | None) -> bool:
        return lane is None or self._open[lane] < self.per_lane

    def _offer(self, lane: str | None) -> None:
        queue = self._lanes.get(lane)
        if queue and self._has_room(lane):
            heapq.heappush(self._ready, (queue[0][0], next(self._seq), lane))

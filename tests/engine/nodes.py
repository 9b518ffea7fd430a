"""Worker nodes in one process for the tests: the SQLite store with a heartbeat, and the
in-memory queue, leases and budget that nodes of one job share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyfill.engine.distributed.memory_lease import MemoryLeases
from skyfill.engine.distributed.memory_queue import MemoryTaskQueue
from skyfill.engine.distributed.queue import unfinished_worker_tasks
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.ratelimit.memory_budget import MemoryBudget


class SqliteNodeStore(SqliteStateStore):
    """The SQLite store with the one thing a worker node needs besides: a heartbeat. (The
    SQLite store has no worker registry: a `workers()` there would make the monitor count
    an embedded run's workers instead of its runner's heartbeat.)"""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.beats: dict[str, dict[str, Any]] = {}

    def worker_heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        self.beats[worker_id] = info


@dataclass
class SharedInMemory:
    """What the nodes of one job share, in memory; the queue is fed from `planner` (the
    store's unfinished worker tasks of the current phase)."""

    planner: SqliteStateStore
    leases: MemoryLeases = field(default_factory=MemoryLeases)
    budget: MemoryBudget = field(default_factory=MemoryBudget)
    queue: MemoryTaskQueue = field(init=False)

    def __post_init__(self) -> None:
        self.queue = MemoryTaskQueue(source=lambda: unfinished_worker_tasks(self.planner))

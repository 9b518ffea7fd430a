"""Worker nodes in one process for the tests: the SQLite store with a heartbeat, and the
in-memory queue, leases and budget that nodes of one job share."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skyfill.engine.distributed.memory_lease import MemoryLeases
from skyfill.engine.distributed.memory_queue import MemoryTaskQueue
from skyfill.engine.distributed.node import NodeSettings, WorkerNode
from skyfill.engine.distributed.queue import unfinished_worker_tasks
from skyfill.engine.layout import JobLayout
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
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


def memory_nodes(
    layout: JobLayout, handlers: list, settings: EngineSettings, poll_seconds: float = 0.1
) -> tuple[SqliteNodeStore, list[tuple[WorkerNode, SqliteNodeStore]]]:
    """A planner's store and one node (with its own store) per handler, sharing one SQLite
    file and the in-memory queue, leases and budget."""
    planner = SqliteNodeStore(layout.state_db)
    shared = SharedInMemory(planner)
    stores = [SqliteNodeStore(layout.state_db) for _ in handlers]
    nodes = [
        WorkerNode(
            JobRunner(h, layout, s, settings),
            s,
            NodeSettings(worker_id=f"n{i}", visibility_timeout=5.0, poll_seconds=poll_seconds),
            queue=shared.queue,
            leases=shared.leases,
            budget=shared.budget,
        )
        for i, (h, s) in enumerate(zip(handlers, stores, strict=True))
    ]
    return planner, list(zip(nodes, stores, strict=True))

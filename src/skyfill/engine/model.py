"""The engine's vocabulary as data: statuses, roles, batches, tasks and item results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import pyarrow as pa


class JobStatus(StrEnum):
    PLANNING = "planning"
    RUNNING = "running"
    """Being run, or crashed while running (no fresh heartbeat): resume it."""
    STOPPED = "stopped"
    """Stopped by a signal (Ctrl-C, SIGTERM): resume it."""
    PAUSED = "paused"
    CANCELLED = "cancelled"
    AGGREGATING = "aggregating"
    COMPLETED = "completed"
    FAILED = "failed"


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class Role(StrEnum):
    COORDINATOR = "coordinator"
    WORKER = "worker"
    RETRY_PLANNER = "retry_planner"
    AGGREGATOR = "aggregator"


PENDING_ITEM = "pending"
PHASE_BACKFILL = "backfill"
PHASE_AGGREGATE = "aggregate"
GROUP_INITIAL = "initial_batch"


@dataclass(frozen=True, slots=True)
class Batch:
    """The data slice of one worker task (e.g. 100 DIDs). Read-only once planned."""

    batch_id: str
    phase: str
    group: str
    items: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Task:
    """One unit of execution over one batch."""

    task_id: str
    batch_id: str
    role: Role
    phase: str
    group: str
    status: TaskStatus = TaskStatus.PENDING


@dataclass(slots=True)
class ItemResult:
    """The outcome of one item (for a backfill: one DID) as the handler reports it."""

    key: str
    status: str
    """`ok` or the terminal/failed status the handler gives it."""
    error_class: str | None = None
    error: str | None = None
    retryable: bool = False
    attempts: int = 1
    data: dict[str, Any] = field(default_factory=dict)
    """Handler-specific facts kept with the outcome (e.g. pds, rev, record_count)."""
    metrics: dict[str, float] = field(default_factory=dict)
    """Counters of the work done for this item (e.g. api_requests, bytes), summed per task."""


@dataclass(slots=True)
class ItemOutput:
    """An item's result plus the rows it produced (None when it produced none)."""

    result: ItemResult
    rows: pa.Table | None = None


def retry_phase(round_: int) -> str:
    return f"retry_{round_}"


def retry_round(phase: str) -> int:
    """0 for the backfill phase, n for `retry_n`."""
    return int(phase.removeprefix("retry_")) if phase.startswith("retry_") else 0


def retry_group(round_: int) -> str:
    return f"retry_batch_{round_}"


def batch_id(index: int, round_: int = 0) -> str:
    prefix = f"retry{round_}-" if round_ else ""
    return f"{prefix}batch-{index:04d}"


def task_id_for(batch: str) -> str:
    return batch.replace("batch-", "task-")

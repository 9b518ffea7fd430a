"""The engine's vocabulary as data: statuses, roles, batches, tasks and item results."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

import pyarrow as pa

from skyfill.errors import Outcome


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

    @property
    def active(self) -> bool:
        """Being run (or crashed while it was): workers have work in it."""
        return self in ACTIVE_JOB_STATUSES

    def may_become(self, new: JobStatus) -> bool:
        """Whether the table allows it; staying is always allowed (a replayed write)."""
        return new == self or new in JOB_TRANSITIONS[self]


ACTIVE_JOB_STATUSES = frozenset({JobStatus.RUNNING, JobStatus.AGGREGATING})
_STOPPED = frozenset({JobStatus.STOPPED, JobStatus.PAUSED, JobStatus.CANCELLED})
_RESUMED = frozenset({JobStatus.RUNNING, JobStatus.AGGREGATING})
JOB_TRANSITIONS: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.PLANNING: frozenset({JobStatus.RUNNING, JobStatus.FAILED}),
    # Running: aggregating (or the next phase), a stop, or a failure.
    JobStatus.RUNNING: _RESUMED | _STOPPED | {JobStatus.FAILED},
    JobStatus.AGGREGATING: _RESUMED | _STOPPED | {JobStatus.COMPLETED, JobStatus.FAILED},
    # Stopped or failed: resumed, or stopped for good by a later pause/cancel.
    **{status: _RESUMED | _STOPPED | {JobStatus.FAILED} for status in _STOPPED},
    JobStatus.FAILED: _RESUMED | _STOPPED | {JobStatus.FAILED},
    # Completed: only `skyfill retry --failed` opens it again.
    JobStatus.COMPLETED: frozenset({JobStatus.RUNNING}),
}
"""Every status a job may move to from each status; the state stores refuse the rest."""


class InvalidTransition(RuntimeError):
    """A job (or item) was asked to move to a status its current one does not lead to."""


def check_job_transition(old: JobStatus, new: JobStatus) -> None:
    if not old.may_become(new):
        raise InvalidTransition(f"a {old} job cannot become {new}")


class TaskStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class ItemStatus(StrEnum):
    """The item statuses the engine itself knows. A job type ends an item `ok`, `failed`
    (retried by a retry phase when its error is retryable) or with a terminal status of
    its own (a backfill's `not_found`, `takendown`, ...), which is never retried."""

    PENDING = "pending"
    OK = Outcome.OK.value
    FAILED = Outcome.FAILED.value


def item_may_become(old: str, new: str) -> bool:
    """Pending items get any outcome; failed ones go back to pending (a retry phase);
    an item with any other outcome keeps it."""
    if old == ItemStatus.PENDING:
        return new != ItemStatus.PENDING
    return old == ItemStatus.FAILED and new == ItemStatus.PENDING


class Role(StrEnum):
    COORDINATOR = "coordinator"
    WORKER = "worker"
    RETRY_PLANNER = "retry_planner"
    AGGREGATOR = "aggregator"


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
    scratch: Path | None = None
    """Where the handler may write files for its items (`SpilledRows`, temporary files):
    the task's segment directory, whose files that no commit names are deleted when the
    task is opened again, and all of it when the task is done. None: nowhere."""


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

    def __post_init__(self) -> None:
        # An Outcome or ItemStatus member becomes its plain string: statuses are counted by
        # name in dicts that go out as JSON (orjson takes only exact str keys).
        self.status = str(self.status)


@dataclass(frozen=True, slots=True)
class SpilledRows:
    """An item's rows that its handler wrote to a file (too many to hold in memory, or
    written where they were decoded): a Parquet file of the output schema in the batch's
    `scratch` directory, sorted and de-duplicated as a segment is. The engine commits it
    as a segment of its own.

    One file may hold the rows of several items (`items` > 1: a fetch process's chunk).
    The handler then yields those items one after another, each with its own `rows`, and
    the engine commits the file once, with all of their outcomes, or not at all."""

    path: Path
    rows: int
    """This item's rows in the file."""
    parts: int = 1
    """Files it was merged from (a count for the item's metrics)."""
    items: int = 1
    """Items whose rows the file holds (this one among them)."""


@dataclass(slots=True)
class ItemOutput:
    """An item's result plus the rows it produced (None when it produced none), in memory
    or (`spilled`) in a file."""

    result: ItemResult
    rows: pa.Table | None = None
    spilled: SpilledRows | None = None

    @property
    def row_count(self) -> int:
        if self.spilled is not None:
            return self.spilled.rows
        return self.rows.num_rows if self.rows is not None else 0


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

"""The state-store seam: every backend implements `StateStore`.

The store is the single source of truth for what is done. Item outcomes and the output
segment holding their rows are committed together, so that an item counts as done
exactly when its rows are durable. Phase plans (new batches and tasks, items moved to
them) are committed in one transaction too.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Protocol

from skyfill.engine.model import Batch, ItemResult, JobStatus, Task, TaskStatus
from skyfill.storage.spool import Segment

CLAIM: ContextVar[str | None] = ContextVar("skyfill_claim", default=None)
"""The claim token of the task run in this context (worker nodes; see `claim_task`)."""


class TaskTakenOver(RuntimeError):
    """Another worker has taken this task over (this one went silent too long): stop
    working on it and write nothing more for it. Not a failure of the task."""


@dataclass(frozen=True, slots=True)
class JobRecord:
    job_id: str
    job_type: str
    handler: str
    """Import path of the job type's handler class, `module:Class`."""
    status: JobStatus
    phase: str
    config: dict[str, Any]
    created_at: float
    updated_at: float
    item_count: int
    control: str | None
    """A stop another process asked for (`cancel` or `pause`), until the runner obeys."""
    heartbeat_at: float | None
    """When a runner last said it is alive."""
    runner: str | None
    """Who beat the heartbeat: `host:pid`."""


class StateStore(Protocol):
    def create_job(
        self,
        job_id: str,
        job_type: str,
        handler: str,
        config: dict[str, Any],
        batches: list[Batch],
        tasks: list[Task],
    ) -> None:
        """Record a planned job, its batches, tasks and pending items, atomically."""
        ...

    def job(self) -> JobRecord | None: ...

    def set_job_status(self, status: JobStatus, phase: str | None = None) -> None: ...

    def heartbeat(self, runner: str) -> None:
        """Say that `runner` (`host:pid`) is alive and running the job."""
        ...

    def request_control(self, action: str | None) -> None:
        """Ask the running runner to `cancel` or `pause` (None clears the request)."""
        ...

    def add_items(self, batches: list[Batch], tasks: list[Task]) -> int:
        """Add new items to a running job, in new batches and tasks of its current phase,
        atomically; returns how many. Raises if an item, batch or task already exists."""
        ...

    def known_items(self, keys: list[str]) -> set[str]:
        """Those of `keys` that are items of the job already."""
        ...

    def put_stats(self, name: str, data: dict[str, Any]) -> None:
        """Keep the latest live statistics published under `name` (e.g. per-host counters)."""
        ...

    def get_stats(self, name: str) -> dict[str, Any]: ...

    def append_sample(self, sample: dict[str, Any]) -> None:
        """Add one point to the job's recorded timeline. `sample["t"]` (epoch seconds) is
        set to now when absent; samples are kept in time order."""
        ...

    def samples(self, since: float | None = None, last: int | None = None) -> list[dict[str, Any]]:
        """The recorded timeline, oldest first: only samples taken after `since` (epoch
        seconds), and of those only the newest `last`."""
        ...

    def plan_phase(self, phase: str, batches: list[Batch], tasks: list[Task]) -> None:
        """Start `phase`: add its batches and tasks, move their items there as pending."""
        ...

    def tasks(self, phase: str | None = None, status: TaskStatus | None = None) -> list[Task]: ...

    def task_status_counts(self) -> dict[str, int]: ...

    def batch_items(self, batch_id: str) -> list[str]: ...

    def pending_items(self, batch_id: str) -> list[str]:
        """Items of the batch that have no committed outcome yet."""
        ...

    def task(self, task_id: str) -> Task | None: ...

    def start_task(self, task_id: str) -> None: ...

    def claim_task(self, task_id: str, claim: str) -> None:
        """Record `claim` (a token unique to one run of the task) as the task's owner. A
        run whose context carries another token (`CLAIM`) can commit nothing more to the
        task: its `commit_items` and `finish_task` raise TaskTakenOver. This fencing is
        the store's, checked inside the commit's own transaction."""
        ...

    def commit_items(
        self, task_id: str, results: list[ItemResult], rows: list[int], segment: Segment | None
    ) -> None:
        """Record outcomes (with each item's row count) and the segment holding their rows
        in one transaction."""
        ...

    def task_item_metrics(self, task_id: str) -> dict[str, float]:
        """Sums of the task's items' metrics, plus items_processed and rows."""
        ...

    def segments(self, task_id: str) -> list[Segment]: ...

    def finish_task(
        self,
        task_id: str,
        status: TaskStatus,
        *,
        output_file: str | None,
        row_count: int,
        sha256: str | None,
        metrics: dict[str, Any],
        error: str | None = None,
    ) -> None: ...

    def task_info(self, task_id: str) -> dict[str, Any]: ...

    def failed_items(self, retryable_only: bool) -> list[tuple[ItemResult, str | None]]:
        """Items whose status is `failed` (optionally only retryable ones), with the id of
        the task that recorded the failure."""
        ...

    def iter_items(self) -> Iterator[ItemResult]: ...

    def items_with_status(self, statuses: Collection[str]) -> Iterator[ItemResult]:
        """The items whose status is one of `statuses`, by key (without reading the others
        where the store can: SQLite by its status index, Redis for `failed`)."""
        ...

    def status_counts(self) -> dict[str, int]: ...

    def completions_since(self, since: float) -> int:
        """Items that got an outcome at or after `since` (epoch seconds)."""
        ...

    def close(self) -> None: ...


class NodeStore(StateStore, Protocol):
    """What a worker node needs of the store besides `StateStore`: say it is alive."""

    def worker_heartbeat(self, worker_id: str, info: dict[str, Any]) -> None:
        """Record the worker's state (`info`, JSON) and that it is alive now."""
        ...

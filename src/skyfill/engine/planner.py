"""Planning as pure functions: batches and tasks of a phase, and the retry planner's plan."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from skyfill.engine.model import (
    GROUP_INITIAL,
    PHASE_AGGREGATE,
    PHASE_BACKFILL,
    Batch,
    ItemResult,
    Role,
    Task,
    batch_id,
    retry_group,
    retry_phase,
    task_id_for,
)


def split_batches(
    items: list[str],
    size: int,
    phase: str = PHASE_BACKFILL,
    group: str = GROUP_INITIAL,
    round_: int = 0,
) -> list[Batch]:
    return [
        Batch(batch_id(i, round_), phase, group, tuple(items[start : start + size]))
        for i, start in enumerate(range(0, len(items), size))
    ]


def phase_names(retries: int) -> list[str]:
    """The phases of a job with `retries` retry phases: backfill, retry_1..n, aggregate."""
    return [PHASE_BACKFILL, *(retry_phase(k) for k in range(1, retries + 1)), PHASE_AGGREGATE]


def worker_tasks(batches: list[Batch]) -> list[Task]:
    return [
        Task(task_id_for(b.batch_id), b.batch_id, Role.WORKER, b.phase, b.group) for b in batches
    ]


@dataclass(slots=True)
class RetryPlan:
    """What the retry planner decided for one retry round."""

    round: int
    phase: str
    failed_items: list[str]
    failed_tasks: list[str]
    error_counts: dict[str, int]
    batches: list[Batch] = field(default_factory=list)
    tasks: list[Task] = field(default_factory=list)


def plan_retry(
    failures: list[tuple[ItemResult, str | None]], round_: int, batch_size: int
) -> RetryPlan:
    """Re-batch failed items into the TaskGroup `retry_batch_<round>` of phase `retry_<round>`."""
    keys = [item.key for item, _ in failures]
    phase = retry_phase(round_)
    batches = split_batches(keys, batch_size, phase, retry_group(round_), round_)
    return RetryPlan(
        round=round_,
        phase=phase,
        failed_items=keys,
        failed_tasks=sorted({task for _, task in failures if task}),
        error_counts=dict(Counter(item.error_class or "unknown" for item, _ in failures)),
        batches=batches,
        tasks=worker_tasks(batches),
    )

"""The work-queue seam: how worker nodes claim, keep and acknowledge tasks.

Implementations: `redis_queue` (a stream with a consumer group, shared by machines) and
`memory_queue` (one process, an injectable clock, for tests). Fencing a run whose claim
was replaced is the state store's (`claim_task`): it must be checked in the same
transaction as the run's commits, which only the store can do.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from skyfill.engine.model import Role, TaskStatus
from skyfill.engine.state.base import StateStore


@dataclass(frozen=True, slots=True)
class Claim:
    """A task handed to one consumer; it stays claimed until acknowledged."""

    task_id: str
    message_id: str
    deliveries: int = 1


class TaskQueue(Protocol):
    def claim(self, consumer: str) -> Claim | None:
        """The next task nobody has claimed yet, or None."""
        ...

    def reclaim(self, consumer: str, idle_seconds: float) -> Claim | None:
        """A task claimed by a consumer that has not extended it for `idle_seconds`
        (it died or hung), now claimed by `consumer`; or None."""
        ...

    def extend(self, consumer: str, claims: list[Claim]) -> None:
        """Say that `consumer` is still working on `claims` (resets their idle time)."""
        ...

    def ack(self, claim: Claim) -> None:
        """The task is finished: remove it from the queue."""
        ...

    def requeue(self, task_ids: list[str]) -> None:
        """Drop every queued and claimed task and queue `task_ids` afresh (a resume)."""
        ...


def unfinished_worker_tasks(store: StateStore) -> list[str]:
    """The worker tasks of the job's current phase that are not done (what a queue of
    the job should hold, claimed or not)."""
    job = store.job()
    if job is None:
        return []
    return [
        t.task_id
        for t in store.tasks(job.phase)
        if t.role is Role.WORKER and t.status is not TaskStatus.DONE
    ]

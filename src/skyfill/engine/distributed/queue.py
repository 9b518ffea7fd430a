"""The work-queue seam: how worker nodes claim, keep and acknowledge tasks."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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

    def depth(self) -> dict[str, int]:
        """`waiting` (never claimed) and `claimed` (claimed, not acknowledged) tasks."""
        ...

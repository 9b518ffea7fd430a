"""The engine's progress events, as a seam: the runner and its worker tasks call a
`JobObserver`; whoever shows progress (the rich view, JSON log lines: `monitor.progress`)
implements it. The engine never imports what watches it.
"""

from __future__ import annotations

from typing import Any, Protocol

from skyfill.engine.model import ItemResult


class JobObserver(Protocol):
    def start(self, job_id: str, total: int, already_done: int) -> None:
        """A run of the job begins: `already_done` of its `total` items have an outcome."""
        ...

    def item_done(self, result: ItemResult, rows: int) -> None:
        """An item got its outcome (called from the event loop, as items finish)."""
        ...

    def stats(self, data: dict[str, Any]) -> None:
        """The handler's live statistics, as just published (every couple of seconds)."""
        ...

    def stop(self) -> None:
        """The run ended (completed, stopped or failed)."""
        ...


class NullObserver:
    """Watches nothing (the default, and for commands that show no progress)."""

    def start(self, job_id: str, total: int, already_done: int) -> None:
        return None

    def item_done(self, result: ItemResult, rows: int) -> None:
        return None

    def stats(self, data: dict[str, Any]) -> None:
        return None

    def stop(self) -> None:
        return None

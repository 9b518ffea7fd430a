"""The log context: fields (job_id, task_id, did, host) that every record logged from the
current asyncio task carries, without passing them down every call.

A ContextVar, so each asyncio task - one job, one engine task, one DID - carries its own;
`monitor.logs` stamps them on each record and formats them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextvars import ContextVar

CONTEXT_FIELDS = ("job_id", "task_id", "did", "host")
_context: ContextVar[dict[str, str]] = ContextVar("skyfill_log_context", default={})  # noqa: B039


def bind(**fields: str) -> None:
    """Attach `fields` (job_id, task_id, did, host) to every record logged from the current
    context (this asyncio task and the tasks it starts from now on)."""
    _context.set({**_context.get(), **fields})


@contextlib.contextmanager
def bound(**fields: str) -> Iterator[None]:
    token = _context.set({**_context.get(), **fields})
    try:
        yield
    finally:
        _context.reset(token)


def current() -> dict[str, str]:
    """The fields bound in the current context."""
    return _context.get()

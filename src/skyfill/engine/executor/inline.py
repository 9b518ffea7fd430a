"""Runs the work in the calling thread: no parallelism, for tests and tiny jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class InlineExecutor:
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(*args)

    def shutdown(self) -> None:
        return None

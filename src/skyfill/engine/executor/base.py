"""The executor seam: run a picklable function with arguments and await its result."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

T = TypeVar("T")


class Executor(Protocol):
    async def run(self, fn: Callable[..., T], *args: Any) -> T: ...

    def shutdown(self) -> None: ...

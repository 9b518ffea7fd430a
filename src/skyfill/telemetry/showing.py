"""Progress of a long-running stream while it runs (`skyfill firehose`, `skyfill labels`):
a live table on a terminal (rich), a JSON log line every interval elsewhere, or nothing.
The stream says what its facts are, its one-line summary and its table."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

log = logging.getLogger("skyfill.progress")

Facts = Callable[[], dict[str, Any]]


@contextlib.asynccontextmanager
async def showing(
    facts: Facts,
    kind: str,
    interval: float,
    *,
    event: str,
    line: Callable[[dict[str, Any]], str],
    table: Callable[[dict[str, Any]], Any],
) -> AsyncIterator[None]:
    """Progress while the block runs: `auto` is a live table (`table(facts)`, a rich
    renderable) on a terminal, JSON log lines (`line(facts)`, with `event`) elsewhere;
    `none` shows nothing."""
    if kind == "none":
        yield
        return
    if kind == "rich" or (kind == "auto" and sys.stderr.isatty()):
        async with _live(facts, table):
            yield
        return
    task = asyncio.create_task(_lines(facts, interval, event, line))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _lines(
    facts: Facts, interval: float, event: str, line: Callable[[dict[str, Any]], str]
) -> None:
    while True:
        await asyncio.sleep(interval)
        now = facts()
        log.info(line(now), extra={"event": event, **now})


@contextlib.asynccontextmanager
async def _live(facts: Facts, table: Callable[[dict[str, Any]], Any]) -> AsyncIterator[None]:
    from rich.console import Console
    from rich.live import Live

    class View:
        def __rich__(self) -> Any:
            return table(facts())

    live = Live(View(), console=Console(stderr=True), refresh_per_second=4, transient=False)
    live.start()
    try:
        yield
    finally:
        live.stop()

"""A running label stream, seen: a JSON log line (event `labels_progress`) every interval
off a terminal, a live table on one."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import Any

from skyfill.labels.stats import summary_line

log = logging.getLogger("skyfill.progress")
COLUMNS = ("labels_received", "labels_applied", "labels_refused", "malformed", "cursor", "head")


@contextlib.asynccontextmanager
async def showing(
    facts: Callable[[], dict[str, Any]], kind: str, interval: float
) -> AsyncIterator[None]:
    """Progress while the block runs: `auto` is a live table on a terminal, JSON log
    lines elsewhere; `none` shows nothing."""
    if kind == "none":
        yield
        return
    if kind == "rich" or (kind == "auto" and sys.stderr.isatty()):
        async with _live(facts):
            yield
        return
    task = asyncio.create_task(_lines(facts, interval))
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _lines(facts: Callable[[], dict[str, Any]], interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        now = facts()
        log.info(summary_line(now), extra={"event": "labels_progress", **now})


@contextlib.asynccontextmanager
async def _live(facts: Callable[[], dict[str, Any]]) -> AsyncIterator[None]:
    from rich.console import Console
    from rich.live import Live
    from rich.table import Table

    class View:
        def __rich__(self) -> Table:
            now = facts()
            table = Table(title=f"labels {now.get('stream_id', '')}")
            table.add_column("labeler")
            for name in COLUMNS:
                table.add_column(name.replace("labels_", "").replace("_", " "), justify="right")
            for each in now["labelers"]:
                table.add_row(each["labeler"], *(str(each.get(name)) for name in COLUMNS))
            return table

    live = Live(View(), console=Console(stderr=True), refresh_per_second=4, transient=False)
    live.start()
    try:
        yield
    finally:
        live.stop()

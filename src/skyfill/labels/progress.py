"""A running label stream, seen: a JSON log line (event `labels_progress`) every interval
off a terminal, a live table on one."""

from __future__ import annotations

import logging
from contextlib import AbstractAsyncContextManager
from typing import Any

from skyfill.labels.stats import summary_line
from skyfill.telemetry.showing import Facts
from skyfill.telemetry.showing import showing as show

log = logging.getLogger("skyfill.progress")
COLUMNS = ("labels_received", "labels_applied", "labels_refused", "malformed", "cursor", "head")


def showing(facts: Facts, kind: str, interval: float) -> AbstractAsyncContextManager[None]:
    """Progress while the block runs (see `telemetry.showing`)."""
    return show(facts, kind, interval, event="labels_progress", line=summary_line, table=_table)


def _table(now: dict[str, Any]) -> Any:
    from rich.table import Table

    table = Table(title=f"labels {now.get('stream_id', '')}")
    table.add_column("labeler")
    for name in COLUMNS:
        table.add_column(name.replace("labels_", "").replace("_", " "), justify="right")
    for each in now["labelers"]:
        table.add_row(each["labeler"], *(str(each.get(name)) for name in COLUMNS))
    return table

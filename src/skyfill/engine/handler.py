"""The seam a job type implements: plan (coordinator), process (worker), aggregate."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, Self

import pyarrow as pa

from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemOutput
from skyfill.engine.state.base import StateStore


@dataclass(slots=True)
class Plan:
    """What the coordinator produced from the job's input."""

    items: list[str]
    """Unique items, in the order they are batched."""
    input_description: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AggregateContext:
    layout: JobLayout
    store: StateStore
    rows: pa.RecordBatchReader
    """Every task's rows, merged, sorted by the dedup key and de-duplicated (newest kept).
    A handler that names a key column `group_by` (optional) gets them ordered by it first,
    e.g. for a sink partitioned by that column; its task files must be sorted so too
    (`MergeSpec.order_columns`)."""
    input_files: list[Path]
    """Task output files that were merged (each has its `.done` marker)."""


class Handler(Protocol):
    job_type: str
    output_schema: pa.Schema
    dedup_key: tuple[str, ...]
    """Columns that identify a row; the aggregator keeps one row per key."""
    newest_column: str
    """Among rows with the same key, the one with the greatest value here is kept."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        """Build the handler from its config; raise UsageError naming a bad key."""
        ...

    def config_dict(self) -> dict[str, Any]:
        """The job's config as plain JSON values (stored, and used again by resume)."""
        ...

    def plan(self) -> Plan:
        """Read and validate the input; raise UsageError if it cannot be used."""
        ...

    async def open(self) -> None:
        """Acquire what workers share (HTTP session, process pool). Called once per run."""
        ...

    async def close(self) -> None: ...

    def process(self, batch: Batch, items: list[str]) -> AsyncGenerator[ItemOutput, None]:
        """Process `items` of `batch`, yielding each item's output as it completes."""
        ...

    def wants_more_work(self) -> bool:
        """True when the items in hand are mostly waiting (e.g. on throttled hosts) and
        another task would find work that can progress now; the engine then opens one."""
        ...

    def live_stats(self) -> dict[str, Any]:
        """Counters to show while the job runs (published to the state store)."""
        ...

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        """Write the final output from the merged rows; return facts for the manifest."""
        ...


def handler_path(handler: Handler) -> str:
    cls = type(handler)
    return f"{cls.__module__}:{cls.__qualname__}"

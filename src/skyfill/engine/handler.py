"""The seam a job type implements: plan (coordinator), process (worker), aggregate."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemOutput
from skyfill.engine.state.base import StateStore


@dataclass(slots=True)
class Plan:
    """What the coordinator produced from the job's input."""

    items: list[str]
    """Unique items in input order."""
    input_description: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


@dataclass(slots=True)
class AggregateContext:
    layout: JobLayout
    store: StateStore
    task_outputs: list[Path]
    """Task output files that have their `.done` marker."""


class Handler(Protocol):
    job_type: str
    output_schema: pa.Schema

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

    def process(self, batch: Batch, items: list[str]) -> AsyncIterator[ItemOutput]:
        """Process `items` of `batch`, yielding each item's output as it completes."""
        ...

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        """Build the final output from the task outputs; return facts for the manifest."""
        ...

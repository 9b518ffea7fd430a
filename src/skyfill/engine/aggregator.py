"""The aggregator role: task outputs -> hierarchical merge -> the handler's final output.

Intermediate merges live under `aggregation/<fingerprint>/`, where the fingerprint names
the exact set of inputs: a crash resumes the same merge, and a later retry phase (new
inputs) starts a fresh one instead of reusing stale levels.
"""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path
from typing import Any

from skyfill.engine import spool
from skyfill.engine.aggregate import MergeSpec, merge_stream, reduce_to_fan_in
from skyfill.engine.failpoints import failpoint
from skyfill.engine.handler import AggregateContext, Handler
from skyfill.engine.layout import JobLayout
from skyfill.engine.state.base import StateStore


def done_task_outputs(layout: JobLayout, store: StateStore) -> list[Path]:
    """Task files that have their `.done` marker, in task order."""
    return [
        layout.task_output(t.task_id)
        for t in store.tasks()
        if spool.is_done(layout.task_done(t.task_id))
    ]


def fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\n")
    return digest.hexdigest()[:16]


def aggregate(
    handler: Handler, layout: JobLayout, store: StateStore, spec: MergeSpec
) -> dict[str, Any]:
    inputs = done_task_outputs(layout, store)
    workdir = layout.aggregation / f"merge-{fingerprint(inputs)}"
    finals, levels = reduce_to_fan_in(inputs, workdir, spec, handler.output_schema)
    failpoint("aggregation_levels_done")
    rows = merge_stream(finals, spec, handler.output_schema)
    facts = handler.aggregate(AggregateContext(layout, store, rows, inputs))
    rows_by_input = {str(p.relative_to(layout.root)): spool.parquet_rows(p) for p in inputs}
    return {
        "input_files": list(rows_by_input),
        "row_counts_by_batch": rows_by_input,
        "input_rows": sum(rows_by_input.values()),
        "fan_in": spec.fan_in,
        "levels": [{"level": level.level, "outputs": level.outputs} for level in levels],
        **facts,
    }


def remove_intermediate_merges(layout: JobLayout) -> None:
    """Once the final output is in place, the merge levels are only disk use."""
    for directory in layout.aggregation.glob("merge-*"):
        shutil.rmtree(directory, ignore_errors=True)

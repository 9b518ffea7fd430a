"""The aggregator role: task outputs -> hierarchical merge -> the handler's final output.

Intermediate merges live under `aggregation/<fingerprint>/`, where the fingerprint names
the exact set of inputs: a crash resumes the same merge, and a later retry phase (new
inputs) starts a fresh one instead of reusing stale levels.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from skyfill.engine.handler import AggregateContext, Handler
from skyfill.engine.layout import JobLayout
from skyfill.engine.state.base import StateStore
from skyfill.failpoints import failpoint
from skyfill.storage import replica, spool
from skyfill.storage.merge import MergeSpec, fits_in_memory, merge_in_memory, merge_stream
from skyfill.storage.merge_levels import reduce_to_fan_in


def done_task_outputs(layout: JobLayout, store: StateStore) -> dict[str, tuple[Path, int]]:
    """Task files that have their `.done` marker, with their rows, by batch id, in task
    order (the rows as recorded when the file was validated)."""
    return {
        t.batch_id: (layout.task_output(t.task_id), store.task_info(t.task_id)["row_count"])
        for t in store.tasks()
        if spool.is_done(layout.task_done(t.task_id))
        and replica.ensure_local(layout.task_output(t.task_id))
    }


def handler_inputs(
    handler: Handler, layout: JobLayout, store: StateStore
) -> list[tuple[Path, int]]:
    """More sorted inputs a job type adds to its aggregation (e.g. the rows an incremental
    refresh carries over from the previous job), with their row counts."""
    extra: Callable[[JobLayout, StateStore], Iterable[tuple[Path, int]]] | None
    extra = getattr(handler, "carried_inputs", None)
    return list(extra(layout, store)) if callable(extra) else []


def fingerprint(paths: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\n")
    return digest.hexdigest()[:16]


def aggregate(
    handler: Handler, layout: JobLayout, store: StateStore, spec: MergeSpec
) -> dict[str, Any]:
    by_batch = done_task_outputs(layout, store)
    carried = handler_inputs(handler, layout, store)
    task_files = [path for path, _ in by_batch.values()]
    inputs = task_files + [path for path, _ in carried]
    workdir = layout.aggregation / f"merge-{fingerprint(inputs)}"
    if spec.in_memory_bytes and fits_in_memory(inputs, spec.in_memory_bytes):
        levels = []
        failpoint("aggregation_levels_done")
        merged = merge_in_memory(inputs, spec, handler.output_schema)
        rows, method = merged.rows, "concatenated" if merged.concatenated else "sorted"
    else:
        finals, levels = reduce_to_fan_in(inputs, workdir, spec, handler.output_schema)
        failpoint("aggregation_levels_done")
        rows, method = merge_stream(finals, spec, handler.output_schema), "streamed"
    facts = handler.aggregate(AggregateContext(layout, store, rows, inputs))
    row_counts = {batch: rows for batch, (_, rows) in by_batch.items()}
    return {
        **facts,  # first: the engine's own keys below cannot be overwritten by a handler
        "input_files": [str(p.relative_to(layout.root)) for p in task_files],
        "row_counts_by_batch": row_counts,
        "input_rows": sum(row_counts.values()) + sum(rows for _, rows in carried),
        **(
            {"carried_files": {str(p.relative_to(layout.root)): n for p, n in carried}}
            if carried
            else {}
        ),
        "merge": method,
        "fan_in": spec.fan_in,
        "merge_dir": str(workdir.relative_to(layout.root)),
        "levels": [{"level": level.level, "outputs": level.outputs} for level in levels],
    }


def remove_intermediate_merges(layout: JobLayout) -> None:
    """Once the final output is in place, the merge levels are only disk use."""
    for directory in layout.aggregation.glob("merge-*"):
        shutil.rmtree(directory, ignore_errors=True)
        replica.removed_tree(directory)

"""The worker role: one task over one batch, with per-item checkpoints.

Outputs are buffered and committed in segments together with the outcomes of their items;
at the end the segments are merged into the task file, which is validated, described in
the task manifest and only then marked `.done`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

import orjson
import pyarrow as pa

from skyfill.engine.handler import Handler
from skyfill.engine.layout import JobLayout
from skyfill.engine.manifest import ManifestWriter, utc_iso
from skyfill.engine.model import Batch, ItemOutput, Task, TaskStatus
from skyfill.engine.observer import JobObserver
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.base import StateStore
from skyfill.failpoints import failpoint
from skyfill.storage import replica, spool
from skyfill.storage.atomic import validate_parquet
from skyfill.storage.merge import MergeSpec, sort_table
from skyfill.telemetry.logcontext import bind

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WorkerContext:
    handler: Handler
    layout: JobLayout
    store: StateStore
    settings: EngineSettings
    observer: JobObserver
    manifests: ManifestWriter
    stop: asyncio.Event
    merge_spec: MergeSpec


async def run_task(ctx: WorkerContext, task: Task) -> None:
    """Run (or finish) one task; returns early, unfinished, when a stop is requested."""
    layout, store = ctx.layout, ctx.store
    bind(task_id=task.task_id)  # this asyncio task's log records, and its items'
    if spool.is_done(layout.task_done(task.task_id)):
        record_finished_task(ctx, task)
        return
    store.start_task(task.task_id)
    log.debug("task started", extra={"event": "task_started", "phase": task.phase})
    ctx.manifests.task(task.task_id, store.task_info(task.task_id), None)
    committed = store.segments(task.task_id)
    spool.discard_uncommitted(layout.segments_dir(task.task_id), committed)
    spool.fetch_committed(layout.segments_dir(task.task_id), committed)
    pending = store.pending_items(task.batch_id)
    if pending:
        batch = Batch(task.batch_id, task.phase, task.group, tuple(pending))
        await _TaskLoop(ctx, task, batch).run()
    if ctx.stop.is_set() and store.pending_items(task.batch_id):
        return
    finalize_task(ctx, task)


def finalize_task(ctx: WorkerContext, task: Task) -> None:
    """Merge, validate, describe, then mark done: `.done` comes only after all of it.

    The `.done` marker is written before the state store records the task as done, so a
    crash in between is repaired on resume (`record_finished_task`).
    """
    layout, store = ctx.layout, ctx.store
    output = spool.merge_segments(
        layout.segments_dir(task.task_id),
        store.segments(task.task_id),
        ctx.handler.output_schema,
        layout.task_output(task.task_id),
        ctx.merge_spec,
    )
    metrics = store.task_item_metrics(task.task_id)
    info = store.task_info(task.task_id)
    info.update(
        status=TaskStatus.DONE,
        finished_at=time.time(),
        output_file=str(output.path.relative_to(layout.root)),
        metrics=metrics,
    )
    result = {
        "file": str(output.path.relative_to(layout.root)),
        "status": "ok",
        "row_count": output.rows,
        "sha256": output.sha256,
        "written_at": utc_iso(),
    }
    ctx.manifests.task(task.task_id, info, result)
    spool.mark_done(layout.task_done(task.task_id), output.sha256)
    log.debug(
        "task done",
        extra={"event": "task_done", "rows": output.rows, "items": metrics["items_processed"]},
    )
    failpoint("task_marked_done")
    _store_done(ctx, task, output.rows, output.sha256, metrics)


def record_failed_task(ctx: WorkerContext, task: Task, exc: Exception) -> None:
    """The task's machinery failed (not an item): record why; resume runs it again."""
    reason = f"{type(exc).__name__}: {exc}"
    log.error("task failed: %s", reason, extra={"event": "task_failed", "task_id": task.task_id})
    ctx.store.finish_task(
        task.task_id,
        TaskStatus.FAILED,
        output_file=None,
        row_count=0,
        sha256=None,
        metrics=ctx.store.task_item_metrics(task.task_id),
        error=reason,
    )
    ctx.manifests.task(task.task_id, ctx.store.task_info(task.task_id), None)


def record_finished_task(ctx: WorkerContext, task: Task) -> None:
    """On resume: a task whose `.done` marker exists is recorded as done in the state store
    (its file is checked against its manifest first)."""
    layout = ctx.layout
    replica.ensure_local(layout.task_manifest(task.task_id))
    replica.ensure_local(layout.task_output(task.task_id))
    manifest = orjson.loads(layout.task_manifest(task.task_id).read_bytes())
    rows = validate_parquet(layout.task_output(task.task_id), manifest["result"]["row_count"])
    sha = layout.task_done(task.task_id).read_text().strip()
    _store_done(ctx, task, rows, sha, ctx.store.task_item_metrics(task.task_id))


def _store_done(
    ctx: WorkerContext, task: Task, rows: int, sha256: str, metrics: dict[str, float]
) -> None:
    layout = ctx.layout
    ctx.store.finish_task(
        task.task_id,
        TaskStatus.DONE,
        output_file=str(layout.task_output(task.task_id).relative_to(layout.root)),
        row_count=rows,
        sha256=sha256,
        metrics=metrics,
    )
    spool.remove_segments(layout.segments_dir(task.task_id))


class _TaskLoop:
    """Consume the handler's item outputs and commit them in segments."""

    def __init__(self, ctx: WorkerContext, task: Task, batch: Batch) -> None:
        self.ctx = ctx
        self.task = task
        self.batch = batch
        self.buffer: list[ItemOutput] = []
        self.buffered_rows = 0
        self.oldest = 0.0
        self.next_seq = 1 + max((s.seq for s in ctx.store.segments(task.task_id)), default=0)

    async def run(self) -> None:
        outputs = self.ctx.handler.process(self.batch, list(self.batch.items))
        stop = asyncio.ensure_future(self.ctx.stop.wait())
        step: asyncio.Future | None = None
        try:
            async with contextlib.aclosing(outputs):
                while True:
                    step = step or asyncio.ensure_future(anext(outputs))
                    done, _ = await asyncio.wait(
                        {step, stop},
                        timeout=self._flush_due_in(),
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    if not done:  # nothing finished, but buffered outcomes are due
                        self._flush()
                        continue
                    if step not in done:  # stop requested
                        step.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await step
                        break
                    try:
                        output = step.result()
                    except StopAsyncIteration:
                        break
                    step = None
                    self._add(output)
        finally:
            stop.cancel()
            self._flush()

    def _flush_due_in(self) -> float | None:
        if not self.buffer:
            return None
        return max(0.0, self.oldest + self.ctx.settings.flush_seconds - time.monotonic())

    def _add(self, output: ItemOutput) -> None:
        if not self.buffer:
            self.oldest = time.monotonic()
        self.buffer.append(output)
        rows = output.rows.num_rows if output.rows is not None else 0
        self.buffered_rows += rows
        self.ctx.observer.item_done(output.result, rows)
        settings = self.ctx.settings
        if (
            self.buffered_rows >= settings.flush_rows
            or len(self.buffer) >= settings.flush_items
            or time.monotonic() - self.oldest >= settings.flush_seconds
        ):
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        ctx = self.ctx
        tables = [o.rows for o in self.buffer if o.rows is not None and o.rows.num_rows]
        segment = None
        if tables:
            table = sort_table(pa.concat_tables(tables), ctx.merge_spec)
            segment = spool.write_segment(
                ctx.layout.segments_dir(self.task.task_id),
                self.task.task_id,
                self.next_seq,
                table,
            )
            self.next_seq += 1
        ctx.store.commit_items(
            self.task.task_id,
            [o.result for o in self.buffer],
            [o.rows.num_rows if o.rows is not None else 0 for o in self.buffer],
            segment,
        )
        self.buffer = []
        self.buffered_rows = 0
        failpoint("segment_committed")

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
from pathlib import Path

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


async def run_task(ctx: WorkerContext, task: Task, started: asyncio.Event | None = None) -> None:
    """Run (or finish) one task; returns early, unfinished, when a stop is requested.

    `started` is set once the handler holds the task's items (its `process` has begun), or
    once it is clear that it never will: until then the handler's `wants_more_work` cannot
    count them.

    Everything that touches storage (the state store, segment files, shared storage, the
    final merge) runs in a thread: a slow disk or a state store riding out an outage never
    holds up the fetches of the other tasks on the event loop."""
    bind(task_id=task.task_id)  # this asyncio task's log records, and its items'
    started = started or asyncio.Event()
    try:
        if await asyncio.to_thread(spool.is_done, ctx.layout.task_done(task.task_id)):
            await asyncio.to_thread(record_finished_task, ctx, task)
            return
        pending, next_seq = await asyncio.to_thread(_open_task, ctx, task)
        if pending:
            scratch = ctx.layout.segments_dir(task.task_id)
            batch = Batch(task.batch_id, task.phase, task.group, tuple(pending), scratch)
            await _TaskLoop(ctx, task, batch, next_seq, started).run()
    finally:
        started.set()
    if ctx.stop.is_set() and await asyncio.to_thread(ctx.store.pending_items, task.batch_id):
        return
    await asyncio.to_thread(finalize_task, ctx, task)


def _open_task(ctx: WorkerContext, task: Task) -> tuple[list[str], int]:
    """Mark the task started, keep only its committed segments (fetching those another
    worker wrote); returns its items still pending and the next segment's number."""
    layout, store = ctx.layout, ctx.store
    store.start_task(task.task_id)
    log.debug("task started", extra={"event": "task_started", "phase": task.phase})
    ctx.manifests.task(task.task_id, store.task_info(task.task_id), None)
    committed = store.segments(task.task_id)
    spool.discard_uncommitted(layout.segments_dir(task.task_id), committed)
    spool.fetch_committed(layout.segments_dir(task.task_id), committed)
    next_seq = 1 + max((s.seq for s in committed), default=0)
    return store.pending_items(task.batch_id), next_seq


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
    """Consume the handler's item outputs and commit them in segments.

    A commit (sort, segment file, state store) runs in a thread while the loop goes on
    taking outputs; one commit per task is in flight at a time, so segments keep their
    order. Outputs that arrive meanwhile are buffered, up to twice the flush limits; past
    that the loop waits for the commit (memory stays bounded when the store is slow)."""

    def __init__(
        self, ctx: WorkerContext, task: Task, batch: Batch, next_seq: int, started: asyncio.Event
    ) -> None:
        self.ctx = ctx
        self.started = started
        self.task = task
        self.batch = batch
        self.buffer: list[ItemOutput] = []
        self.buffered_rows = 0
        self.oldest = 0.0
        self.next_seq = next_seq
        self.committing: asyncio.Future[None] | None = None
        self.file: Path | None = None
        """The file of rows (`SpilledRows`) being buffered, shared by several items."""
        self.file_items_due = 0
        """Its items still to come: the buffer is not committed before they are in."""

    async def run(self) -> None:
        outputs = self.ctx.handler.process(self.batch, list(self.batch.items))
        stop = asyncio.ensure_future(self.ctx.stop.wait())
        step: asyncio.Future | None = None
        try:
            async with contextlib.aclosing(outputs):
                while True:
                    step = step or asyncio.ensure_future(anext(outputs))
                    if not self.started.is_set():
                        await asyncio.sleep(0)  # the first step runs: process() takes the items
                        self.started.set()
                    waiting = {step, stop} | ({self.committing} if self.committing else set())
                    done, _ = await asyncio.wait(
                        waiting, timeout=self._flush_due_in(), return_when=asyncio.FIRST_COMPLETED
                    )
                    if self.committing is not None and self.committing in done:
                        await self._committed()
                    if step in done:
                        try:
                            output = step.result()
                        except StopAsyncIteration:
                            break
                        step = None
                        await self._take(output)
                    elif stop in done:
                        step.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await step
                        break
                    if self._flush_due():
                        await self._flush()
        finally:
            stop.cancel()
            await self._committed()
            if self.file_items_due:  # stopped inside a shared file's items: not committed
                self._clear()
            await self._flush()
            await self._committed()

    async def _take(self, output: ItemOutput) -> None:
        """Buffer an output. A file of rows (`spilled`) is a segment of its own: the
        outputs before it are flushed first, and the file once every item it holds is in."""
        spilled = output.spilled
        if self.file_items_due:
            if spilled is None or spilled.path != self.file:
                raise RuntimeError(
                    f"{self.ctx.handler.job_type}: the items of {self.file} must come one "
                    "after another"
                )
        elif spilled is not None:
            await self._flush()  # the outputs before it, in their segment
            self.file, self.file_items_due = spilled.path, spilled.items
        self._add(output)
        if spilled is not None:
            self.file_items_due -= 1
            if not self.file_items_due:
                await self._flush()  # the file, a segment of its own

    def _flush_due_in(self) -> float | None:
        """Seconds until the buffer is due by age; None when nothing is waiting for the
        clock (an empty buffer, or a commit in flight, whose end wakes the loop)."""
        if not self.buffer or self.committing is not None or self.file_items_due:
            return None
        return max(0.0, self.oldest + self.ctx.settings.flush_seconds - time.monotonic())

    def _flush_due(self) -> bool:
        if not self.buffer or self.file_items_due:
            return False
        settings = self.ctx.settings
        factor = 1 if self.committing is None else 2  # buffer on while a commit runs
        return (
            self.buffered_rows >= settings.flush_rows * factor
            or len(self.buffer) >= settings.flush_items * factor
            or (
                self.committing is None and time.monotonic() - self.oldest >= settings.flush_seconds
            )
        )

    def _clear(self) -> None:
        self.buffer, self.buffered_rows, self.file, self.file_items_due = [], 0, None, 0

    def _add(self, output: ItemOutput) -> None:
        if not self.buffer:
            self.oldest = time.monotonic()
        self.buffer.append(output)
        self.buffered_rows += _rows(output)
        self.ctx.observer.item_done(output.result, _rows(output))

    async def _committed(self) -> None:
        """Wait for the commit in flight, if any (its error is raised here)."""
        if self.committing is not None:
            committing, self.committing = self.committing, None
            await committing

    async def _flush(self) -> None:
        """Hand the buffer to a commit in a thread (after the one in flight, if any)."""
        await self._committed()
        if not self.buffer:
            return
        outputs = self.buffer
        self._clear()
        seq = self.next_seq
        if any(_rows(o) for o in outputs):
            self.next_seq += 1
        self.committing = asyncio.ensure_future(asyncio.to_thread(self._commit, outputs, seq))

    def _commit(self, outputs: list[ItemOutput], seq: int) -> None:
        """Write the outputs' rows as segment `seq` and commit it with their outcomes."""
        ctx = self.ctx
        tables = [o.rows for o in outputs if o.rows is not None and _rows(o)]
        spilled = [o.spilled for o in outputs if o.spilled is not None]
        segment = None
        if spilled:  # (alone in its commit: see _take)
            assert len(spilled) == len(outputs) == spilled[0].items, "one whole file"
            segment = spool.adopt_segment(
                ctx.layout.segments_dir(self.task.task_id),
                self.task.task_id,
                seq,
                spilled[0].path,
                sum(s.rows for s in spilled),
            )
        elif tables:
            table = sort_table(pa.concat_tables(tables), ctx.merge_spec)
            segment = spool.write_segment(
                ctx.layout.segments_dir(self.task.task_id), self.task.task_id, seq, table
            )
        ctx.store.commit_items(
            self.task.task_id,
            [o.result for o in outputs],
            [_rows(o) for o in outputs],
            segment,
        )
        failpoint("segment_committed")


def _rows(output: ItemOutput) -> int:
    return output.row_count

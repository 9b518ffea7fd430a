"""Runs one job on this machine: coordinator, worker tasks, aggregator.

Each item's outcome is committed to the state store together with the segment that holds
its rows, so a run killed at any moment resumes without redoing finished items and
without losing or duplicating rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass

import pyarrow as pa

from skyfill.engine import spool
from skyfill.engine.atomic import write_json
from skyfill.engine.handler import AggregateContext, Handler, Plan
from skyfill.engine.layout import JobLayout
from skyfill.engine.manifest import ManifestWriter, utc_iso
from skyfill.engine.model import (
    GROUP_INITIAL,
    PENDING_ITEM,
    PHASE_BACKFILL,
    Batch,
    ItemOutput,
    JobStatus,
    Role,
    Task,
    TaskStatus,
    batch_id,
    task_id_for,
)
from skyfill.engine.state.base import JobRecord, StateStore
from skyfill.errors import UsageError
from skyfill.monitor.progress import NullProgress, Progress

PHASES = [PHASE_BACKFILL, "aggregate"]


class JobError(RuntimeError):
    """The job could not go on (a task or the aggregation failed); resume may fix it."""


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineSettings:
    batch_size: int = 100
    """Items per batch (one worker task each)."""
    parallel_tasks: int = 4
    """Worker tasks running at once in this process."""
    flush_rows: int = 100_000
    """Commit a segment once this many rows are buffered."""
    flush_items: int = 200
    """... or once this many items are finished."""
    flush_seconds: float = 3.0
    """... or once the oldest finished item has waited this long."""


def split_batches(items: list[str], size: int) -> list[Batch]:
    return [
        Batch(batch_id(i), PHASE_BACKFILL, GROUP_INITIAL, tuple(items[start : start + size]))
        for i, start in enumerate(range(0, len(items), size))
    ]


class JobRunner:
    def __init__(
        self,
        handler: Handler,
        layout: JobLayout,
        store: StateStore,
        settings: EngineSettings,
        progress: Progress | None = None,
    ) -> None:
        self.handler = handler
        self.layout = layout
        self.store = store
        self.settings = settings
        self.progress = progress or NullProgress()
        self.manifests = ManifestWriter(layout)
        self.stop_requested = asyncio.Event()

    # -- coordinator -------------------------------------------------------------------

    def submit(self, plan: Plan) -> JobRecord:
        """Record a planned job: batch files, state, manifest; the job is then RUNNING."""
        if self.store.job() is not None:
            raise UsageError(f"job {self.layout.job_id} already exists; use `skyfill resume`")
        if not plan.items:
            raise UsageError("the input holds no valid item to process")
        batches = split_batches(plan.items, self.settings.batch_size)
        tasks = [
            Task(task_id_for(b.batch_id), b.batch_id, Role.WORKER, b.phase, b.group)
            for b in batches
        ]
        submitted = time.time()
        self._write_job_manifest(plan, len(tasks), submitted, JobStatus.PLANNING)
        for batch in batches:
            write_json(
                self.layout.batch_file(batch.batch_id),
                {
                    "batch_id": batch.batch_id,
                    "phase": batch.phase,
                    "group": batch.group,
                    "items": list(batch.items),
                },
            )
        self.store.create_job(
            self.layout.job_id, self.handler.job_type, self.handler.config_dict(), batches, tasks
        )
        self._write_job_manifest(plan, len(tasks), submitted, JobStatus.RUNNING)
        job = self.store.job()
        assert job is not None
        return job

    def _write_job_manifest(self, plan: Plan, tasks: int, submitted: float, status: str) -> None:
        self.manifests.job(
            job_type=self.handler.job_type,
            handler=f"{type(self.handler).__module__}.{type(self.handler).__qualname__}",
            config=self.handler.config_dict(),
            input_info=plan.input_description,
            batch_size=self.settings.batch_size,
            task_count=tasks,
            item_count=len(plan.items),
            phases=PHASES,
            status=status,
            submitted_at=submitted,
        )

    # -- workers and aggregation ---------------------------------------------------------

    async def run(self) -> JobRecord:
        """Run every unfinished task, then aggregate. Returns the job as it ended."""
        job = self.store.job()
        if job is None:
            raise UsageError(f"job {self.layout.job_id} was never planned")
        if job.status is JobStatus.COMPLETED:
            return job
        counts = self.store.status_counts()
        self.progress.start(
            job.job_id, job.item_count, job.item_count - counts.get(PENDING_ITEM, 0)
        )
        try:
            await self._run_workers()
        finally:
            self.progress.stop()
        if self.stop_requested.is_set():
            return self.store.job()  # type: ignore[return-value]
        self._aggregate()
        return self.store.job()  # type: ignore[return-value]

    async def _run_workers(self) -> None:
        todo = [t for t in self.store.tasks() if t.status is not TaskStatus.DONE]
        if not todo:
            return
        await self.handler.open()
        try:
            queue: asyncio.Queue[Task] = asyncio.Queue()
            for task in todo:
                queue.put_nowait(task)
            slots = max(1, min(self.settings.parallel_tasks, len(todo)))
            await asyncio.gather(*(self._worker_slot(queue) for _ in range(slots)))
        finally:
            await self.handler.close()

    async def _worker_slot(self, queue: asyncio.Queue[Task]) -> None:
        while not self.stop_requested.is_set():
            try:
                task = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await self._run_task(task)

    async def _run_task(self, task: Task) -> None:
        layout, store = self.layout, self.store
        if spool.is_done(layout.task_done(task.task_id)):
            self._record_finished_task(task)
            return
        store.start_task(task.task_id)
        segments_dir = layout.segments_dir(task.task_id)
        spool.discard_uncommitted(segments_dir, store.segments(task.task_id))
        pending = store.pending_items(task.batch_id)
        if pending:
            batch = Batch(task.batch_id, task.phase, task.group, tuple(pending))
            await _TaskWork(self, task, batch).run()
        if self.stop_requested.is_set() and store.pending_items(task.batch_id):
            return
        self._finalize_task(task)

    def _finalize_task(self, task: Task) -> None:
        """Merge, validate, describe, then mark done: `.done` comes only after all of it.

        Order matters for kill -9: the `.done` marker is written before the state store
        records the task as done, so a crash in between is repaired on resume
        (`_record_finished_task`) and never leaves a done task without its marker.
        """
        layout = self.layout
        segments = self.store.segments(task.task_id)
        output = spool.merge_segments(
            layout.segments_dir(task.task_id),
            segments,
            self.handler.output_schema,
            layout.task_output(task.task_id),
        )
        info = self.store.task_info(task.task_id)
        info.update(
            status=TaskStatus.DONE,
            finished_at=time.time(),
            output_file=str(output.path.relative_to(layout.root)),
            metrics=self.store.task_item_metrics(task.task_id),
        )
        result = {
            "file": output.path.name,
            "status": "ok",
            "row_count": output.rows,
            "sha256": output.sha256,
            "written_at": utc_iso(),
        }
        self.manifests.task(task.task_id, info, result)
        spool.mark_done(layout.task_done(task.task_id), output.sha256)
        self._record_finished_task(task)

    def _record_finished_task(self, task: Task) -> None:
        """Record a task whose `.done` marker exists as done in the state store."""
        layout = self.layout
        path = layout.task_output(task.task_id)
        expected = sum(s.rows for s in self.store.segments(task.task_id))
        self.store.finish_task(
            task.task_id,
            TaskStatus.DONE,
            output_file=str(path.relative_to(layout.root)),
            row_count=spool.validate_parquet(path, expected),
            sha256=layout.task_done(task.task_id).read_text().strip(),
            metrics=self.store.task_item_metrics(task.task_id),
        )
        spool.remove_segments(layout.segments_dir(task.task_id))

    def _aggregate(self) -> None:
        self.store.set_job_status(JobStatus.AGGREGATING, "aggregate")
        outputs = [
            self.layout.task_output(t.task_id)
            for t in self.store.tasks()
            if spool.is_done(self.layout.task_done(t.task_id))
        ]
        facts = self.handler.aggregate(AggregateContext(self.layout, self.store, outputs))
        self.manifests.aggregation(facts)
        self.store.set_job_status(JobStatus.COMPLETED, "aggregate")
        self.manifests.update_job_status(JobStatus.COMPLETED)


class _TaskWork:
    """One worker task's loop: consume item outputs, commit them in segments."""

    def __init__(self, runner: JobRunner, task: Task, batch: Batch) -> None:
        self.runner = runner
        self.task = task
        self.batch = batch
        self.buffer: list[ItemOutput] = []
        self.buffered_rows = 0
        self.oldest = 0.0
        self.next_seq = 1 + max((s.seq for s in runner.store.segments(task.task_id)), default=0)

    async def run(self) -> None:
        outputs = self.runner.handler.process(self.batch, list(self.batch.items))
        stop = asyncio.ensure_future(self.runner.stop_requested.wait())
        try:
            async with contextlib.aclosing(outputs):
                while True:
                    step = asyncio.ensure_future(anext(outputs))
                    await asyncio.wait({step, stop}, return_when=asyncio.FIRST_COMPLETED)
                    if not step.done():
                        step.cancel()
                        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                            await step
                        break
                    try:
                        output = step.result()
                    except StopAsyncIteration:
                        break
                    self._add(output)
        finally:
            stop.cancel()
            self._flush()

    def _add(self, output: ItemOutput) -> None:
        if not self.buffer:
            self.oldest = time.monotonic()
        self.buffer.append(output)
        rows = output.rows.num_rows if output.rows is not None else 0
        self.buffered_rows += rows
        self.runner.progress.item_done(output.result, rows)
        settings = self.runner.settings
        if (
            self.buffered_rows >= settings.flush_rows
            or len(self.buffer) >= settings.flush_items
            or time.monotonic() - self.oldest >= settings.flush_seconds
        ):
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        runner = self.runner
        tables = [o.rows for o in self.buffer if o.rows is not None and o.rows.num_rows]
        segment = None
        if tables:
            table = pa.concat_tables(tables)
            segment = spool.write_segment(
                runner.layout.segments_dir(self.task.task_id),
                self.task.task_id,
                self.next_seq,
                table,
            )
            self.next_seq += 1
        runner.store.commit_items(
            self.task.task_id,
            [o.result for o in self.buffer],
            [o.rows.num_rows if o.rows is not None else 0 for o in self.buffer],
            segment,
        )
        self.buffer = []
        self.buffered_rows = 0

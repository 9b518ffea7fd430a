"""Runs one job on this machine: coordinator, worker tasks, retry planner, aggregator.

    backfill (initial_batch) -> retry_1..n (retry_batch_k) -> aggregate (final_aggregation)

Each item's outcome is committed with the segment holding its rows, each phase plan in
one transaction, and every file is marked `.done` only once validated: a run killed at
any moment resumes without redoing finished work, losing or duplicating rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from typing import Any

from skyfill.engine.aggregator import aggregate, remove_intermediate_merges
from skyfill.engine.discovery import (
    Discoverer,
    DiscoveryContext,
    discovers,
    discovery_pending,
    run_discovery,
)
from skyfill.engine.handler import Handler, Plan, handler_path
from skyfill.engine.lanes import TaskLanes
from skyfill.engine.layout import JobLayout
from skyfill.engine.lifecycle import STOPPING, runner_id
from skyfill.engine.manifest import ManifestWriter, write_batch_files
from skyfill.engine.model import (
    PHASE_AGGREGATE,
    Batch,
    ItemStatus,
    JobStatus,
    Task,
    TaskStatus,
    retry_round,
)
from skyfill.engine.observer import JobObserver, NullObserver
from skyfill.engine.planner import (
    RetryPlan,
    phase_names,
    plan_retry,
    split_batches,
    worker_tasks,
)
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.base import JobRecord, StateStore, TaskTakenOver
from skyfill.engine.timeline import Timeline
from skyfill.engine.worker import WorkerContext, record_failed_task, run_task
from skyfill.errors import UsageError
from skyfill.failpoints import failpoint
from skyfill.storage.merge import MergeSpec

DISCOVERY_POLL_SECONDS = 0.2


class JobError(RuntimeError):
    """The job could not go on (a task or the aggregation failed); resume may fix it."""


class JobRunner:
    def __init__(
        self,
        handler: Handler,
        layout: JobLayout,
        store: StateStore,
        settings: EngineSettings,
        observer: JobObserver | None = None,
    ) -> None:
        self.handler = handler
        self.layout = layout
        self.store = store
        self.settings = settings
        self.observer = observer or NullObserver()
        self.manifests = ManifestWriter(layout)
        self.timeline = Timeline(handler, store, settings.sample_interval, runner_id())
        self.stop_requested = asyncio.Event()
        self.merge_spec = MergeSpec(
            key_columns=handler.dedup_key,
            newest_column=handler.newest_column,
            group_by=getattr(handler, "group_by", None),
            fan_in=settings.fan_in,
            workers=1 if settings.max_memory is not None else 2,
            batch_rows=8192 if settings.max_memory is not None else 65_536,
            in_memory_bytes=0 if settings.max_memory is not None else settings.merge_in_memory,
        )
        self.lanes: dict[str, str] = {}
        """Discovered batches' lanes (their host), by batch id, until their task is queued."""
        self.discovered: deque[Task] = deque()
        """Tasks this process's discovery added, until `_run_tasks` takes them (reading the
        phase's tasks from the store at every turn would cost O(tasks) each time)."""

    # -- coordinator -------------------------------------------------------------------

    def submit(self, plan: Plan) -> JobRecord:
        """Record a planned job: batch files, state, manifest; the job is then RUNNING."""
        if self.store.job() is not None:
            raise UsageError(f"job {self.layout.job_id} already exists; use `skyfill resume`")
        if not plan.items and not discovers(self.handler):
            raise UsageError("the input holds no valid item to process")
        batches = split_batches(plan.items, self.settings.batch_size)
        tasks = worker_tasks(batches)
        submitted = time.time()
        self._write_job_manifest(plan, len(tasks), submitted, JobStatus.PLANNING)
        self._write_batch_files(batches)
        self.store.create_job(
            self.layout.job_id,
            self.handler.job_type,
            handler_path(self.handler),
            self.handler.config_dict(),
            batches,
            tasks,
        )
        failpoint("job_submitted")
        self._write_job_manifest(plan, len(tasks), submitted, JobStatus.RUNNING)
        job = self.store.job()
        assert job is not None
        return job

    def _write_job_manifest(self, plan: Plan, tasks: int, submitted: float, status: str) -> None:
        self.manifests.job(
            job_type=self.handler.job_type,
            handler=handler_path(self.handler),
            config=self.handler.config_dict(),
            input_info=plan.input_description,
            batch_size=self.settings.batch_size,
            task_count=tasks,
            item_count=len(plan.items),
            phases=phase_names(self.settings.retries),
            status=status,
            submitted_at=submitted,
        )

    def _write_batch_files(self, batches: list[Batch]) -> None:
        write_batch_files(self.layout, batches)

    # -- the run -------------------------------------------------------------------------

    async def run(self) -> JobRecord:
        """Run the job's remaining phases. Returns the job as it ended or stopped."""
        job = self._job()
        if job.status is JobStatus.COMPLETED:
            return job
        self.store.request_control(None)
        self.store.set_job_status(JobStatus.RUNNING)
        self.manifests.update_job(status=JobStatus.RUNNING)
        counts = self.store.status_counts()
        self.observer.start(
            job.job_id, job.item_count, job.item_count - counts.get(ItemStatus.PENDING, 0)
        )
        self.timeline.maybe_sample(force=True)  # where this run starts
        watcher = asyncio.ensure_future(self._watch_control())
        try:
            await self._run_phases()
        except Exception as exc:
            raise self.fail(exc) from exc
        finally:
            watcher.cancel()
            self.timeline.force_next()
            self.publish_stats()
            self.observer.stop()
        if self.stop_requested.is_set():
            return self.record_stop()
        try:
            await asyncio.to_thread(self.aggregate_job)
        except Exception as exc:
            raise self.fail(exc) from exc
        return self._job()

    def fail(self, exc: Exception) -> JobError:
        """Record a failure of the machinery itself (disk full, a bug): the job is `failed`
        with the reason, and stays resumable."""
        reason = f"{type(exc).__name__}: {exc}"
        self.store.set_job_status(JobStatus.FAILED)
        self.manifests.update_job(status=JobStatus.FAILED, error=reason)
        return JobError(
            f"{self.layout.job_id}: {reason}; fix the cause, then "
            f"`skyfill resume {self.layout.job_id}`"
        )

    def _job(self) -> JobRecord:
        job = self.store.job()
        if job is None:
            raise UsageError(f"job {self.layout.job_id} was never planned")
        return job

    async def _run_phases(self) -> None:
        opened = False
        try:
            while not self.stop_requested.is_set():
                phase = self._job().phase
                if phase == PHASE_AGGREGATE:
                    return
                todo = [t for t in self.store.tasks(phase) if t.status is not TaskStatus.DONE]
                finding = discovery_pending(self.handler, self.store, phase)
                if (todo or finding) and not opened:
                    opened = True  # close() even if open() fails half-way
                    await self.handler.open()
                await self._run_tasks(todo, self._start_discovery() if finding else None)
                if self.stop_requested.is_set():
                    return
                await self.plan_next_phase(phase)
        finally:
            if opened:
                await self.handler.close()

    def worker_context(self) -> WorkerContext:
        return WorkerContext(
            self.handler,
            self.layout,
            self.store,
            self.settings,
            self.observer,
            self.manifests,
            self.stop_requested,
            self.merge_spec,
        )

    def _start_discovery(self) -> asyncio.Task:
        assert isinstance(self.handler, Discoverer)
        ctx = DiscoveryContext(
            self.layout, self.store, self.settings.batch_size, self.lanes, self.discovered
        )
        return asyncio.ensure_future(run_discovery(self.handler, ctx))

    async def _run_tasks(self, todo: list[Task], discovery: asyncio.Task | None = None) -> None:
        """Run the phase's tasks; with a discovery running, also the tasks it adds, until
        it has finished and they are all done."""
        if not todo and discovery is None:
            return
        ctx = self.worker_context()
        waiting = TaskLanes[Task]()  # oldest first, at most a few open per host (lanes.py)
        for task in todo:
            waiting.add(task)
        seen = {t.task_id for t in todo}
        running: set[asyncio.Task] = set()
        lane_of: dict[asyncio.Task, str | None] = {}
        opening: asyncio.Task | None = None
        """The task opened beyond `parallel_tasks` whose items the handler does not hold
        yet (waiting for it to start): until it has, `wants_more_work` cannot count them,
        and would answer yes to every task up to `max_open_tasks` at once."""
        try:
            while (waiting or running or discovery) and not self.stop_requested.is_set():
                if discovery is not None:
                    finished = discovery.done()  # before looking: its last tasks are there
                    for task in self._take_discovered(seen):
                        waiting.add(task, self.lanes.pop(task.batch_id, None))
                    if finished:
                        discovery.result()  # a failed discovery fails the phase
                        discovery = None
                if opening is not None and opening.done():
                    opening = None
                while waiting and self.may_open_task(len(running), opening is not None):
                    if (picked := waiting.pop()) is None:
                        break  # every waiting task's host has its tasks open
                    task, lane = picked
                    started = asyncio.Event()
                    future = asyncio.ensure_future(self.run_guarded(ctx, task, started))
                    if len(running) >= self.settings.parallel_tasks:
                        opening = asyncio.ensure_future(started.wait())
                    lane_of[future] = lane
                    running.add(future)
                if not running:
                    await asyncio.sleep(DISCOVERY_POLL_SECONDS)
                    continue
                done, _ = await asyncio.wait(
                    running | ({opening} if opening else set()),
                    timeout=0.2,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                done &= running
                running -= done
                for finished_task in done:
                    waiting.done(lane_of.pop(finished_task, None))
                    finished_task.result()  # a failed task fails the phase
        finally:
            if opening is not None:
                opening.cancel()
            if discovery is not None:
                discovery.cancel()
                await asyncio.gather(discovery, return_exceptions=True)
            if running:  # stopping (or failing): let the others flush and stop cleanly
                self.stop_requested.set()
                await asyncio.gather(*running, return_exceptions=True)

    def _take_discovered(self, seen: set[str]) -> list[Task]:
        """The tasks discovery added since the last look (in the store already)."""
        added = []
        while self.discovered:
            task = self.discovered.popleft()
            if task.task_id not in seen:
                seen.add(task.task_id)
                added.append(task)
        return added

    def may_open_task(self, running: int, opening: bool = False) -> bool:
        """Whether to open another task: up to `parallel_tasks`, then one at a time (none
        while the last one opened has not started: `opening`) while the handler wants
        more work, up to `max_open_tasks`."""
        if running < self.settings.parallel_tasks:
            return True
        if opening:
            return False
        return running < self.settings.max_open_tasks and self.handler.wants_more_work()

    async def run_guarded(
        self, ctx: WorkerContext, task: Task, started: asyncio.Event | None = None
    ) -> None:
        try:
            await run_task(ctx, task, started)
        except TaskTakenOver:
            raise  # the task lives on with its new owner; nothing to record
        except Exception as exc:
            await asyncio.to_thread(record_failed_task, ctx, task, exc)
            raise

    # -- retry planner -------------------------------------------------------------------

    async def plan_next_phase(self, finished_phase: str) -> None:
        """After a phase: plan retry_<k+1> for retryable failures, or move to aggregation.

        The backoff comes before the plan is recorded: once recorded, its tasks may start
        (at once on other worker nodes). A stop during the backoff records nothing."""
        round_ = retry_round(finished_phase) + 1
        failures = await asyncio.to_thread(self.store.failed_items, retryable_only=True)
        if not failures or round_ > self.settings.retries:
            await asyncio.to_thread(self._start_aggregation_phase)
            return
        plan = plan_retry(failures, round_, self.settings.batch_size)
        backoff = self.settings.retry_backoff * 2 ** (round_ - 1)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stop_requested.wait(), timeout=backoff)
        if not self.stop_requested.is_set():
            await asyncio.to_thread(self._start_retry_phase, plan, backoff)

    def _start_aggregation_phase(self) -> None:
        self.store.set_job_status(JobStatus.RUNNING, PHASE_AGGREGATE)
        failpoint("aggregate_planned")

    def _start_retry_phase(self, plan: RetryPlan, backoff: float) -> None:
        self._write_batch_files(plan.batches)
        self.manifests.retry(plan, backoff)
        self.store.plan_phase(plan.phase, plan.batches, plan.tasks)
        failpoint("retry_planned")

    def plan_failed_retry(self) -> RetryPlan | None:
        """`skyfill retry --failed`: a new retry phase over every item that ended failed."""
        failures = self.store.failed_items(retryable_only=False)
        if not failures:
            return None
        tasks = self.store.tasks()
        last = max((retry_round(t.phase) for t in tasks), default=0)
        plan = plan_retry(failures, last + 1, self.settings.batch_size)
        self._write_batch_files(plan.batches)
        self.manifests.retry(plan, 0.0)
        self.store.plan_phase(plan.phase, plan.batches, plan.tasks)
        self.manifests.update_job(
            status=JobStatus.RUNNING, phases=phase_names(max(last + 1, self.settings.retries))
        )
        return plan

    # -- aggregator ----------------------------------------------------------------------

    def aggregate_job(self) -> None:
        self.store.set_job_status(JobStatus.AGGREGATING, PHASE_AGGREGATE)
        self.manifests.update_job(status=JobStatus.AGGREGATING)
        facts = aggregate(self.handler, self.layout, self.store, self.merge_spec)
        failpoint("aggregated")
        self.manifests.aggregation(facts)
        self.store.set_job_status(JobStatus.COMPLETED, PHASE_AGGREGATE)
        self.manifests.update_job(status=JobStatus.COMPLETED)
        self.timeline.maybe_sample(force=True)
        remove_intermediate_merges(self.layout)

    # -- control -------------------------------------------------------------------------

    async def _watch_control(self) -> None:
        """Beat the heartbeat and obey `skyfill cancel` / `pause` from other processes
        (the store is read and written in a thread: a slow store delays only this)."""
        me = runner_id()
        polls = 0
        while True:
            await asyncio.to_thread(self.store.heartbeat, me)
            polls += 1
            if polls % self.settings.stats_every_polls == 0:
                stats = self.collect_stats()
                sample = self.timeline.handler_sample() if self.timeline.may_be_due() else None
                await asyncio.to_thread(self.store_stats, stats, sample)
            job = await asyncio.to_thread(self.store.job)
            if job is not None and job.control in STOPPING:
                self.stop_requested.set()
                return
            await asyncio.sleep(self.settings.control_poll_seconds)

    def collect_stats(self) -> dict[str, Any]:
        """The handler's live statistics, shown at once (read on the event loop, where
        the handler's counters change)."""
        stats = self.handler.live_stats()
        self.observer.stats(stats)
        return stats

    def store_stats(self, stats: dict[str, Any], sample: dict[str, Any] | None) -> None:
        """Publish statistics to the state store, and record a timeline point if one is
        due (`sample`: the handler's part of it, taken on the loop; None: none is due)."""
        if stats:
            self.store.put_stats("handler", stats)
        if sample is not None:
            self.timeline.maybe_sample(handler_sample=sample)

    def publish_stats(self) -> None:
        self.store_stats(self.collect_stats(), self.timeline.handler_sample())

    def record_stop(self) -> JobRecord:
        job = self._job()
        status = STOPPING.get(job.control or "", JobStatus.STOPPED)
        self.store.set_job_status(status)
        self.store.request_control(None)
        self.manifests.update_job(status=status)
        return self._job()

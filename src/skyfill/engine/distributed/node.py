"""A worker node: serves one job from the shared queue until the job ends.

Any number of nodes, on any machines, run this loop against the same shared state (Redis:
`cli/session.py` wires the Redis queue, leases and budget; the in-memory ones serve
nodes sharing a job inside one process):

- claim a task (first one another node died holding, else a new one), run it exactly as
  the local runner does (per-item checkpoints, segments, `.done`), acknowledge it;
- keep what it holds claimed (heartbeat) and say it is alive (`workers` hash);
- when the current phase has no unfinished task, take the phase's lease and plan the next
  phase (retry or aggregation), once, whichever node gets there first;
- in the aggregation phase, the node holding the aggregation lease aggregates; if it dies,
  its lease expires and another node resumes the merge from its `.done` levels.

A failing task (the machinery, not an item) fails the job, as on one machine; `skyfill
resume --state …` puts its unfinished tasks back in the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import secrets
import socket
import time
from dataclasses import dataclass

from skyfill.engine.discovery import (
    Discoverer,
    DiscoveryContext,
    discovery_pending,
    run_discovery,
)
from skyfill.engine.distributed.lease import Lease, Leases, held
from skyfill.engine.distributed.queue import Claim, TaskQueue
from skyfill.engine.model import PHASE_AGGREGATE, JobStatus, Role, TaskStatus
from skyfill.engine.runner import STOPPING, JobError, JobRunner
from skyfill.engine.state.base import CLAIM, JobRecord, NodeStore, TaskTakenOver
from skyfill.engine.worker import WorkerContext

ACTIVE = (JobStatus.RUNNING, JobStatus.AGGREGATING)
log = logging.getLogger(__name__)


def default_worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True, slots=True)
class NodeSettings:
    worker_id: str
    visibility_timeout: float = 60.0
    """Seconds a claimed task may go without a heartbeat before another node takes it."""
    lease_ttl: float = 30.0
    poll_seconds: float = 0.5
    phase_check_seconds: float = 1.0


class WorkerNode:
    """One node of a job: its queue, leases and rate budget are shared with the other
    nodes (Redis ones across machines, in-memory ones within a process).

    `budget` is the job type's request budget shared by every node (a
    `ratelimit.shared.SharedBudget`: the engine, which knows no rate limits, passes it on
    untyped), handed to a handler that has a `shared_budget`."""

    def __init__(
        self,
        runner: JobRunner,
        store: NodeStore,
        settings: NodeSettings,
        *,
        queue: TaskQueue,
        leases: Leases,
        budget: object | None = None,
    ) -> None:
        self.runner = runner
        self.store = store
        self.settings = settings
        self.queue = queue
        self.leases = leases
        if budget is not None and hasattr(runner.handler, "shared_budget"):
            setattr(runner.handler, "shared_budget", budget)  # noqa: B010 (not on Handler)
        self.running: dict[asyncio.Task, Claim] = {}
        self.tasks_done = 0
        self._phase_checked = 0.0
        self._opened = False
        self._discovery: asyncio.Task | None = None

    @property
    def worker_id(self) -> str:
        return self.settings.worker_id

    def _lease(self, name: str) -> Lease:
        return self.leases(name, self.worker_id, self.settings.lease_ttl)

    async def serve(self) -> JobRecord:
        """Work on the job until it completes, fails or is stopped; return it as it ended."""
        beat = asyncio.ensure_future(self._heartbeat())
        try:
            await self._loop()
        except Exception as exc:
            raise self.runner.fail(exc) from exc
        finally:
            self.runner.stop_requested.set()
            if self._discovery is not None:
                self._discovery.cancel()
                await asyncio.gather(self._discovery, return_exceptions=True)
            await self._drain()
            beat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await beat
            if self._opened:
                await self.runner.handler.close()
            self._say_alive(state="stopped")
            self.runner.publish_stats()
        job = self._job()
        if job.control in STOPPING and job.status in ACTIVE:
            return self.runner.record_stop()
        return job

    def _job(self) -> JobRecord:
        job = self.store.job()
        if job is None:
            raise JobError(f"job {self.runner.layout.job_id} does not exist in {self.store!r}")
        return job

    async def _loop(self) -> None:
        ctx = self.runner.worker_context()
        while not self.runner.stop_requested.is_set():
            job = self._job()
            if job.status not in ACTIVE or job.control in STOPPING:
                return
            if job.phase == PHASE_AGGREGATE:
                if not self.running:
                    await self._aggregate()
                else:
                    await self._collect(timeout=self.settings.poll_seconds)
                continue
            await self._maybe_discover()
            started = await self._start_one(ctx) if self._may_start() else False
            if self.running:
                finished = await self._collect(timeout=0.01 if started else 0.2)
                if finished:
                    await self._maybe_advance()
            elif not started:
                await self._maybe_advance()
                await asyncio.sleep(self.settings.poll_seconds)

    def _may_start(self) -> bool:
        return self.runner.may_open_task(len(self.running))

    async def _start_one(self, ctx: WorkerContext) -> bool:
        claim = self.queue.reclaim(self.worker_id, self.settings.visibility_timeout)
        if claim is None:
            claim = self.queue.claim(self.worker_id)
        if claim is None:
            return False
        task = self.store.task(claim.task_id)
        if task is None or task.status is TaskStatus.DONE or task.role is not Role.WORKER:
            self.queue.ack(claim)  # finished by a node that died before acknowledging
            return True
        await self._open_handler()
        # A token for this run: a run of the task that another claim has since replaced
        # (here or on another node) is fenced off from committing anything more.
        token = f"{self.worker_id}/{secrets.token_hex(4)}"
        self.store.claim_task(task.task_id, token)
        context = contextvars.copy_context()
        context.run(CLAIM.set, token)
        run = asyncio.get_running_loop().create_task(
            self.runner.run_guarded(ctx, task), context=context
        )
        self.running[run] = claim
        return True

    async def _open_handler(self) -> None:
        if not self._opened:
            self._opened = True  # close() even if open() fails half-way
            await self.runner.handler.open()

    async def _maybe_discover(self) -> None:
        """Run the job's discovery here if it is unfinished and no other node runs it (its
        lease); a discovery whose node died resumes here from its saved position."""
        if self._discovery is not None:
            if self._discovery.done():
                self._discovery.result()  # a failed discovery fails the job
                self._discovery = None
            return
        handler = self.runner.handler
        if not discovery_pending(handler, self.store, self._job().phase):
            return
        assert isinstance(handler, Discoverer)  # discovery_pending found it one
        await self._open_handler()
        self._discovery = asyncio.ensure_future(self._discover(handler))

    async def _discover(self, handler: Discoverer) -> None:
        async with held(self._lease("discovery")) as mine:
            if not mine:
                await asyncio.sleep(self.settings.phase_check_seconds)
                return
            if discovery_pending(handler, self.store, self._job().phase):
                ctx = DiscoveryContext(
                    self.runner.layout, self.store, self.runner.settings.batch_size
                )
                await run_discovery(handler, ctx)

    async def _collect(self, timeout: float) -> int:
        if not self.running:
            await asyncio.sleep(timeout)
            return 0
        done, _ = await asyncio.wait(
            self.running, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        for finished in done:
            claim = self.running.pop(finished)
            try:
                finished.result()  # a failed task fails the job (recorded by run_guarded)
            except TaskTakenOver as exc:
                log.warning("%s: %s", self.worker_id, exc)  # its new owner acknowledges it
                continue
            task = self.store.task(claim.task_id)
            if task is not None and task.status is TaskStatus.DONE:
                self.queue.ack(claim)
                self.tasks_done += 1
        return len(done)

    async def _drain(self) -> None:
        """Let running tasks flush what they have and stop; what they did not finish stays
        claimed in the queue and goes to another node after the visibility timeout."""
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)
            for finished, claim in list(self.running.items()):
                if not finished.exception():
                    task = self.store.task(claim.task_id)
                    if task is not None and task.status is TaskStatus.DONE:
                        self.queue.ack(claim)
            self.running.clear()

    async def _maybe_advance(self) -> None:
        """Plan the next phase if the current one has no unfinished task (once, by the node
        that holds the phase's lease)."""
        now = time.monotonic()
        if now - self._phase_checked < self.settings.phase_check_seconds:
            return
        self._phase_checked = now
        phase = self._job().phase
        if phase == PHASE_AGGREGATE or self._phase_unfinished(phase):
            return
        async with held(self._lease(f"advance:{phase}")) as mine:
            if not mine or self._job().phase != phase or self._phase_unfinished(phase):
                return  # another node advanced it, or is doing so
            await self.runner.plan_next_phase(phase)

    def _phase_unfinished(self, phase: str) -> bool:
        if discovery_pending(self.runner.handler, self.store, phase):
            return True
        return any(t.status is not TaskStatus.DONE for t in self.store.tasks(phase))

    async def _aggregate(self) -> None:
        async with held(self._lease("aggregate")) as mine:
            if not mine:
                await asyncio.sleep(self.settings.poll_seconds)
                return
            if self._job().status is JobStatus.COMPLETED:
                return
            await asyncio.to_thread(self.runner.aggregate_job)

    async def _heartbeat(self) -> None:
        """Keep our claims, say we are alive, publish stats, and obey cancel / pause."""
        every = min(1.0, self.settings.visibility_timeout / 3)
        while True:
            self.queue.extend(self.worker_id, list(self.running.values()))
            self._say_alive(state="working" if self.running else "idle")
            self.store.heartbeat(self.worker_id)
            job = self.store.job()
            if job is not None and job.control in STOPPING:
                self.runner.stop_requested.set()
            await asyncio.sleep(every)

    def _say_alive(self, state: str) -> None:
        tasks = sorted({c.task_id for c in self.running.values()})
        self.store.worker_heartbeat(
            self.worker_id,
            {
                "state": state,
                "host": socket.gethostname(),
                "pid": os.getpid(),
                "tasks": tasks,
                "current_task": ", ".join(tasks),
                "tasks_done": self.tasks_done,
            },
        )
        stats = self.runner.handler.live_stats()
        if stats:
            self.store.put_stats(f"handler:{self.worker_id}", stats)

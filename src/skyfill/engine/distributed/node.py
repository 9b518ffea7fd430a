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
from skyfill.engine.model import PHASE_AGGREGATE, JobStatus, Role, Task, TaskStatus
from skyfill.engine.runner import STOPPING, JobError, JobRunner
from skyfill.engine.state.base import CLAIM, JobRecord, NodeStore, TaskTakenOver
from skyfill.engine.worker import WorkerContext

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
    end_poll_seconds: float = 0.1
    """How often a node that waits for another's aggregation looks whether the job ended
    (one read of the job: a node exits this soon after the job completes)."""


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
        self._opening: asyncio.Task | None = None
        """The task opened beyond `parallel_tasks` whose items the handler does not hold
        yet (as in the runner's task window): no other is opened until it has started."""
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
            if self._opening is not None:
                self._opening.cancel()
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
        if job.control in STOPPING and job.status.active:
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
            job = await asyncio.to_thread(self._job)
            if not job.status.active or job.control in STOPPING:
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
                    # this node's last task just ended: perhaps the phase's last one
                    await self._maybe_advance(at_once=not self.running)
            elif not started:
                await self._maybe_advance()
                await asyncio.sleep(self.settings.poll_seconds)

    def _may_start(self) -> bool:
        if self._opening is not None and self._opening.done():
            self._opening = None
        return self.runner.may_open_task(len(self.running), self._opening is not None)

    async def _start_one(self, ctx: WorkerContext) -> bool:
        taken = await asyncio.to_thread(self._take_task)
        if taken is None:
            return False
        claim, task, token = taken
        if task is None:
            return True  # a finished task's leftover claim, acknowledged
        await self._open_handler()
        context = contextvars.copy_context()
        context.run(CLAIM.set, token)
        started = asyncio.Event()
        if len(self.running) >= self.runner.settings.parallel_tasks:
            self._opening = asyncio.ensure_future(started.wait())
        run = asyncio.get_running_loop().create_task(
            self.runner.run_guarded(ctx, task, started), context=context
        )
        self.running[run] = claim
        return True

    def _take_task(self) -> tuple[Claim, Task | None, str] | None:
        """Claim a task (one a dead node held, else a new one) and fence it with a token
        for this run: a run of the task that another claim has since replaced (here or on
        another node) cannot commit anything more. None: no task to take."""
        claim = self.queue.reclaim(self.worker_id, self.settings.visibility_timeout)
        if claim is None:
            claim = self.queue.claim(self.worker_id)
        if claim is None:
            return None
        task = self.store.task(claim.task_id)
        if task is None or task.status is TaskStatus.DONE or task.role is not Role.WORKER:
            self.queue.ack(claim)  # finished by a node that died before acknowledging
            return claim, None, ""
        token = f"{self.worker_id}/{secrets.token_hex(4)}"
        self.store.claim_task(task.task_id, token)
        return claim, task, token

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
        if not await asyncio.to_thread(self._discovery_pending):
            return
        assert isinstance(handler, Discoverer)  # discovery_pending found it one
        await self._open_handler()
        self._discovery = asyncio.ensure_future(self._discover(handler))

    def _discovery_pending(self) -> bool:
        return discovery_pending(self.runner.handler, self.store, self._job().phase)

    async def _discover(self, handler: Discoverer) -> None:
        async with held(self._lease("discovery")) as mine:
            if not mine:
                await asyncio.sleep(self.settings.phase_check_seconds)
                return
            if await asyncio.to_thread(self._discovery_pending):
                ctx = DiscoveryContext(
                    self.runner.layout, self.store, self.runner.settings.batch_size
                )
                await run_discovery(handler, ctx)

    async def _collect(self, timeout: float) -> int:
        if not self.running:
            await asyncio.sleep(timeout)
            return 0
        opening = {self._opening} if self._opening is not None else set()
        done, _ = await asyncio.wait(
            {*self.running, *opening}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        done -= opening  # the task opened last has started: another may open now
        for finished in done:
            claim = self.running.pop(finished)
            try:
                finished.result()  # a failed task fails the job (recorded by run_guarded)
            except TaskTakenOver as exc:
                log.warning("%s: %s", self.worker_id, exc)  # its new owner acknowledges it
                continue
            if await asyncio.to_thread(self._ack_if_done, claim):
                self.tasks_done += 1
        return len(done)

    def _ack_if_done(self, claim: Claim) -> bool:
        """Acknowledge the claim of a task that is done; whether it was."""
        task = self.store.task(claim.task_id)
        if task is None or task.status is not TaskStatus.DONE:
            return False
        self.queue.ack(claim)
        return True

    async def _drain(self) -> None:
        """Let running tasks flush what they have and stop; what they did not finish stays
        claimed in the queue and goes to another node after the visibility timeout."""
        if self.running:
            await asyncio.gather(*self.running, return_exceptions=True)
            for finished, claim in list(self.running.items()):
                if not finished.exception():
                    await asyncio.to_thread(self._ack_if_done, claim)
            self.running.clear()

    async def _maybe_advance(self, at_once: bool = False) -> None:
        """Plan the next phase if the current one has no unfinished task (once, by the node
        that holds the phase's lease). The tasks are read at most every
        `phase_check_seconds`, or `at_once` when this node's last running task has ended."""
        now = time.monotonic()
        if not at_once and now - self._phase_checked < self.settings.phase_check_seconds:
            return
        self._phase_checked = now
        phase = (await asyncio.to_thread(self._job)).phase
        if phase == PHASE_AGGREGATE or await asyncio.to_thread(self._phase_unfinished, phase):
            return
        async with held(self._lease(f"advance:{phase}")) as mine:
            if not mine or await asyncio.to_thread(self._phase_moved_on, phase):
                return  # another node advanced it, or is doing so
            await self.runner.plan_next_phase(phase)

    def _phase_moved_on(self, phase: str) -> bool:
        return self._job().phase != phase or self._phase_unfinished(phase)

    def _phase_unfinished(self, phase: str) -> bool:
        if discovery_pending(self.runner.handler, self.store, phase):
            return True
        return any(t.status is not TaskStatus.DONE for t in self.store.tasks(phase))

    async def _aggregate(self) -> None:
        async with held(self._lease("aggregate")) as mine:
            if not mine:
                await asyncio.sleep(self.settings.end_poll_seconds)
                return
            if (await asyncio.to_thread(self._job)).status is JobStatus.COMPLETED:
                return
            await asyncio.to_thread(self.runner.aggregate_job)

    async def _heartbeat(self) -> None:
        """Keep our claims, say we are alive, publish stats, and obey cancel / pause."""
        every = min(1.0, self.settings.visibility_timeout / 3)
        while True:
            claims = list(self.running.values())
            state = "working" if claims else "idle"
            alive = self._alive_facts(state)
            await asyncio.to_thread(self._beat, claims, alive)
            job = await asyncio.to_thread(self.store.job)
            if job is not None and job.control in STOPPING:
                self.runner.stop_requested.set()
            await asyncio.sleep(every)

    def _beat(self, claims: list[Claim], alive: tuple[dict, dict]) -> None:
        """Keep our claims and say we are alive (in a thread: Redis may be slow)."""
        self.queue.extend(self.worker_id, claims)
        self._publish_alive(alive)
        self.store.heartbeat(self.worker_id)

    def _alive_facts(self, state: str) -> tuple[dict, dict]:
        """This node's facts and its handler's live statistics, read on the event loop."""
        tasks = sorted({c.task_id for c in self.running.values()})
        info = {
            "state": state,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "tasks": tasks,
            "current_task": ", ".join(tasks),
            "tasks_done": self.tasks_done,
        }
        return info, self.runner.handler.live_stats()

    def _publish_alive(self, alive: tuple[dict, dict]) -> None:
        info, stats = alive
        self.store.worker_heartbeat(self.worker_id, info)
        if stats:
            self.store.put_stats(f"handler:{self.worker_id}", stats)

    def _say_alive(self, state: str) -> None:
        self._publish_alive(self._alive_facts(state))

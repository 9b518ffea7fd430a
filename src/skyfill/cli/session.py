"""Running a job from the CLI: open its store, plan or resume, run with signal handling."""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import re
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from skyfill import gcpolicy
from skyfill.engine.definition import import_handler
from skyfill.engine.discovery import discovers
from skyfill.engine.handler import Handler
from skyfill.engine.layout import JobLayout, jobs_in
from skyfill.engine.lifecycle import is_live, reopen
from skyfill.engine.manifest import write_batch_files
from skyfill.engine.model import Batch, JobStatus
from skyfill.engine.observer import JobObserver, NullObserver
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.base import JobRecord, StateStore
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.errors import UsageError
from skyfill.storage import replica
from skyfill.urls import redact_url

if TYPE_CHECKING:  # the distributed mode's modules (redis) load only when it is used
    from skyfill.engine.distributed.node import NodeSettings
    from skyfill.engine.state.redis import RedisStateStore

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Interrupted(Exception):
    """The run stopped before completing (signal, cancel, pause); it can be resumed."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(
            f"job {job.job_id} {job.status}; `skyfill resume {job.job_id}` (or, from Python, "
            f"skyfill.backfill(job_id={job.job_id!r})) continues it"
        )
        self.job = job


def new_job_id(job_type: str = "backfill") -> str:
    return f"{job_type}-{datetime.now(UTC):%Y-%m-%d}-{secrets.token_hex(2)}"


def check_job_id(job_id: str) -> None:
    if not _JOB_ID.match(job_id):
        raise UsageError(f"invalid job id {job_id!r}: use letters, digits, '.', '-' and '_'")


@contextlib.contextmanager
def open_store(layout: JobLayout) -> Iterator[SqliteStateStore]:
    if not layout.state_db.exists():
        raise UsageError(f"no job {layout.job_id} in {layout.workdir}")
    store = SqliteStateStore(layout.state_db)
    try:
        yield store
    finally:
        store.close()


RunJob = Callable[[JobRunner], JobRecord]
"""How a runner is run to its end: `run` below (signals stop it); the Python API runs it
in a thread of its own (`skyfill.api.jobs`)."""


def submit_and_run(
    handler: Handler, layout: JobLayout, progress: JobObserver, run_job: RunJob | None = None
) -> JobRecord:
    if layout.state_db.exists() or layout.manifest.exists():
        raise UsageError(
            f"job {layout.job_id} already exists in {layout.workdir}; "
            f"use `skyfill resume {layout.job_id}`"
        )
    plan = handler.plan()  # validates the input before anything is written
    for warning in plan.warnings:
        print(f"skyfill: warning: {warning}", file=sys.stderr)
    if not plan.items and not discovers(handler):
        raise UsageError("the input holds no valid DID")
    store = SqliteStateStore(layout.state_db)
    try:
        runner = runner_for(handler, layout, store, progress)
        runner.submit(plan)
        del plan  # its items (1M DIDs: ~85 MB) are in the store now, not held while it runs
        return (run_job or run)(runner)
    finally:
        store.close()


def runner_for(
    handler: Handler,
    layout: JobLayout,
    store: StateStore,
    progress: JobObserver | None = None,
) -> JobRunner:
    settings = EngineSettings.from_config(handler.config_dict())
    return JobRunner(handler, layout, store, settings, progress or NullObserver())


def stored_runner(
    layout: JobLayout, store: SqliteStateStore, progress: JobObserver | None = None
) -> JobRunner:
    """The runner of an existing job, rebuilt from its stored handler and config."""
    job = store.job()
    if job is None:  # killed while planning: plan again from the manifest's config
        manifest = _read_manifest(layout)
        handler = import_handler(manifest["handler"]).from_config(manifest["config"])
        runner = runner_for(handler, layout, store, progress)
        runner.submit(handler.plan())
        return runner
    handler = import_handler(job.handler).from_config(job.config)
    return runner_for(handler, layout, store, progress)


def resume(layout: JobLayout, progress: JobObserver, run_job: RunJob | None = None) -> JobRecord:
    with open_store(layout) as store:
        ensure_not_running(store)
        return (run_job or run)(stored_runner(layout, store, progress))


def ensure_not_running(store: SqliteStateStore) -> None:
    job = store.job()
    if job is not None and is_live(job):
        raise UsageError(
            f"job {job.job_id} is running in another process; "
            f"`skyfill cancel {job.job_id}` or `pause` it first"
        )


def _read_manifest(layout: JobLayout) -> dict:
    try:
        return orjson.loads(layout.manifest.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise UsageError(f"job {layout.job_id} has no readable manifest; run it again") from None


def start_processes(handler: Handler) -> None:
    """A handler's child processes, forked before the event loop (which starts threads):
    only while this process runs no other thread (the Python API runs a job in a thread of
    its own; its handler then starts them in the loop, as a pool normally does)."""
    start = getattr(handler, "start_processes", None)
    if callable(start) and threading.active_count() == 1:
        start()


def run(runner: JobRunner) -> JobRecord:
    async def main() -> JobRecord:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop_requested.set)
        return await runner.run()

    gcpolicy.tune()
    start_processes(runner.handler)
    job = asyncio.run(main())
    if job.status is not JobStatus.COMPLETED:
        raise Interrupted(job)
    return job


# -- distributed mode ---------------------------------------------------------------------


def _connect(state_url: str, job_id: str) -> RedisStateStore:
    import redis

    from skyfill.engine.state.redis import RedisStateStore

    if not state_url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"--state {redact_url(state_url)}: expected a redis:// or rediss:// URL")
    try:  # fail fast here; later commands ride out a Redis restart (retries)
        with redis.Redis.from_url(state_url, socket_connect_timeout=5) as probe:
            probe.ping()
    except (redis.RedisError, ValueError) as exc:
        raise UsageError(f"cannot reach Redis at {redact_url(state_url)}: {exc}") from None
    return RedisStateStore.from_url(state_url, job_id)


@contextlib.contextmanager
def open_redis_job(state_url: str, job_id: str) -> Iterator[tuple[JobLayout, RedisStateStore]]:
    """The layout and store of a job submitted to Redis."""
    from skyfill.engine.state.redis import RedisStateStore

    store = _connect(state_url, job_id)
    try:
        entry = RedisStateStore.registered_jobs(store.client).get(job_id)
        if entry is None or store.job() is None:
            raise UsageError(f"no job {job_id} in {redact_url(state_url)}")
        yield local_layout(entry["workdir"], job_id), store
    finally:
        store.close()


def local_layout(workdir: str, job_id: str) -> JobLayout:
    """The job's layout in this process: the shared directory itself, or, for an fsspec
    URL, a private working copy replicated to it (removed when the process exits)."""
    if not replica.is_url(workdir):
        return JobLayout(Path(workdir), job_id)
    scratch = Path(tempfile.mkdtemp(prefix=f"skyfill-{job_id}-"))
    atexit.register(shutil.rmtree, scratch, True)
    layout = JobLayout(scratch, job_id)
    replica.replicate(layout.root, f"{workdir.rstrip('/')}/jobs/{job_id}")
    return layout


def submit_distributed(handler: Handler, workdir: str, job_id: str, state_url: str) -> JobRecord:
    layout = local_layout(workdir, job_id)
    plan = handler.plan()
    for warning in plan.warnings:
        print(f"skyfill: warning: {warning}", file=sys.stderr)
    if not plan.items and not discovers(handler):
        raise UsageError("the input holds no valid DID")
    store = _connect(state_url, layout.job_id)
    try:
        if store.job() is not None or replica.ensure_local(layout.manifest):
            raise UsageError(f"job {layout.job_id} already exists; pick another --job-id")
        job = runner_for(handler, layout, store).submit(plan)
        store.register(workdir)
        return job
    finally:
        store.close()


WAIT_POLL_SECONDS = 0.05
"""How often a worker looks for the job it waits for (--wait-for-job)."""


def prepare_worker() -> None:
    """Import what serving a job takes, while a worker waits for its job to be submitted
    (the wait, not the job, pays for it)."""
    import skyfill.backfill.fetch_pool
    import skyfill.backfill.handler
    import skyfill.engine.distributed.node
    import skyfill.engine.distributed.redis_lease
    import skyfill.engine.distributed.redis_queue
    import skyfill.ratelimit.redis_budget  # noqa: F401


def wait_for_job(state_url: str, job_id: str, deadline: float) -> None:
    """Return once `job_id` is submitted (registered, its tasks queued); a UsageError when
    it is not by `deadline` (time.monotonic())."""
    from skyfill.engine.state.redis import RedisStateStore

    probe = _connect(state_url, job_id)
    try:
        while job_id not in RedisStateStore.registered_jobs(probe.client):
            if time.monotonic() >= deadline:
                raise UsageError(f"no job {job_id} in {redact_url(state_url)} (waited for it)")
            time.sleep(WAIT_POLL_SECONDS)
    finally:
        probe.close()


def active_jobs(state_url: str) -> list[str]:
    """Registered jobs that have work for a worker, oldest first."""
    from skyfill.engine.state.redis import RedisStateStore

    probe = _connect(state_url, "_")
    try:
        registered = RedisStateStore.registered_jobs(probe.client)
        by_age = sorted(registered, key=lambda job_id: registered[job_id].get("created_at", 0))
        active = []
        for job_id in by_age:
            job = RedisStateStore(probe.client, job_id).job()
            if job is not None and job.status.active and job.control is None:
                active.append(job_id)
        return active
    finally:
        probe.close()


def serve_job(
    state_url: str,
    job_id: str,
    settings: NodeSettings,
    overrides: dict[str, Any],
    progress: JobObserver,
) -> JobRecord:
    """Run a worker node on the job until it ends (or this process is stopped)."""
    from skyfill.engine.distributed.node import WorkerNode
    from skyfill.engine.distributed.redis_lease import RedisLeases
    from skyfill.engine.distributed.redis_queue import RedisTaskQueue
    from skyfill.ratelimit.redis_budget import RedisBudget

    with open_redis_job(state_url, job_id) as (layout, store):
        job = store.job()
        assert job is not None
        config = {**job.config, **{k: v for k, v in overrides.items() if k in job.config}}
        handler = import_handler(job.handler).from_config(config)
        runner = runner_for(handler, layout, store, progress)
        node = WorkerNode(
            runner,
            store,
            settings,
            queue=RedisTaskQueue(store.client, store.keys),
            leases=RedisLeases(store.client, store.keys),
            budget=RedisBudget(store.client, state_url),  # rate limits shared by every worker
        )

        async def main() -> JobRecord:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, runner.stop_requested.set)
            return await node.serve()

        gcpolicy.tune()
        start_processes(runner.handler)
        return asyncio.run(main())


def resume_distributed(
    state_url: str, job_id: str, settings: NodeSettings, progress: JobObserver
) -> JobRecord:
    """Put the job's unfinished tasks back in the queue, mark it running, and work on it."""
    from skyfill.engine.distributed.queue import unfinished_worker_tasks
    from skyfill.engine.distributed.redis_queue import RedisTaskQueue

    with open_redis_job(state_url, job_id) as (_layout, store):
        job = store.job()
        assert job is not None
        if job.status is JobStatus.COMPLETED:
            return job
        reopen(store, job)
        RedisTaskQueue(store.client, store.keys).requeue(unfinished_worker_tasks(store))
    return serve_job(state_url, job_id, settings, {}, progress)


def write_batches(layout: JobLayout, batches: list[Batch]) -> None:
    write_batch_files(layout, batches)


@contextlib.contextmanager
def open_job(
    job_id: str, workdir: Path, state_url: str | None
) -> Iterator[tuple[JobLayout, StateStore]]:
    """A job's layout and state store: in Redis with --state, else in <workdir>."""
    if state_url:
        with open_redis_job(state_url, job_id) as opened:
            yield opened
        return
    layout = JobLayout(workdir.resolve(), job_id)
    with open_store(layout) as store:
        yield layout, store


def job_ids(workdir: Path, state_url: str | None) -> list[str]:
    from skyfill.engine.state.redis import RedisStateStore

    if not state_url:
        return jobs_in(workdir.resolve())
    probe = _connect(state_url, "_")
    try:
        return sorted(RedisStateStore.registered_jobs(probe.client))
    finally:
        probe.close()

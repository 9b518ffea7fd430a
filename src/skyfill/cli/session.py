"""Running a job from the CLI: open its store, plan or resume, run with signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import signal
import sys
from collections.abc import Iterator
from datetime import UTC, datetime

import orjson

from skyfill.engine.definition import import_handler
from skyfill.engine.handler import Handler
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import JobStatus
from skyfill.engine.runner import JobRunner, is_live
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.base import JobRecord
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.errors import UsageError
from skyfill.monitor.progress import NullProgress, Progress

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class Interrupted(Exception):
    """The run stopped before completing (signal, cancel, pause); it can be resumed."""

    def __init__(self, job: JobRecord) -> None:
        super().__init__(job.job_id)
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


def submit_and_run(handler: Handler, layout: JobLayout, progress: Progress) -> JobRecord:
    if layout.state_db.exists() or layout.manifest.exists():
        raise UsageError(
            f"job {layout.job_id} already exists in {layout.workdir}; "
            f"use `skyfill resume {layout.job_id}`"
        )
    plan = handler.plan()  # validates the input before anything is written
    for warning in plan.warnings:
        print(f"skyfill: warning: {warning}", file=sys.stderr)
    if not plan.items:
        raise UsageError("the input holds no valid DID")
    store = SqliteStateStore(layout.state_db)
    try:
        runner = runner_for(handler, layout, store, progress)
        runner.submit(plan)
        return run(runner)
    finally:
        store.close()


def runner_for(
    handler: Handler, layout: JobLayout, store: SqliteStateStore, progress: Progress | None = None
) -> JobRunner:
    settings = EngineSettings.from_config(handler.config_dict())
    return JobRunner(handler, layout, store, settings, progress or NullProgress())


def stored_runner(
    layout: JobLayout, store: SqliteStateStore, progress: Progress | None = None
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


def resume(layout: JobLayout, progress: Progress) -> JobRecord:
    with open_store(layout) as store:
        ensure_not_running(store)
        return run(stored_runner(layout, store, progress))


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


def run(runner: JobRunner) -> JobRecord:
    async def main() -> JobRecord:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop_requested.set)
        return await runner.run()

    job = asyncio.run(main())
    if job.status is not JobStatus.COMPLETED:
        raise Interrupted(job)
    return job

"""Running a job from the CLI: open its store, plan or resume, run with signal handling."""

from __future__ import annotations

import asyncio
import secrets
import signal
import sys
from datetime import UTC, datetime

import orjson

from skyfill.engine.handler import Handler
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import JobStatus
from skyfill.engine.runner import EngineSettings, JobRunner
from skyfill.engine.state.base import JobRecord
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.errors import UsageError
from skyfill.monitor.progress import Progress


class Interrupted(Exception):
    """The run was stopped by a signal; the job can be resumed."""


def new_job_id(job_type: str = "backfill") -> str:
    return f"{job_type}-{datetime.now(UTC):%Y-%m-%d}-{secrets.token_hex(2)}"


def submit_and_run(
    handler: Handler, layout: JobLayout, settings: EngineSettings, progress: Progress
) -> JobRecord:
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
        runner = JobRunner(handler, layout, store, settings, progress)
        runner.submit(plan)
        return _run(runner)
    finally:
        store.close()


def resume(layout: JobLayout, progress: Progress, handler_for) -> JobRecord:
    if not layout.state_db.exists():
        raise UsageError(f"no job {layout.job_id} in {layout.workdir}")
    store = SqliteStateStore(layout.state_db)
    try:
        job = store.job()
        if job is None:  # killed while planning: plan again from the manifest's config
            manifest = _read_manifest(layout)
            handler = handler_for(manifest["job_type"], manifest["config"])
            runner = JobRunner(handler, layout, store, _settings(manifest["config"]), progress)
            runner.submit(handler.plan())
        else:
            handler = handler_for(job.job_type, job.config)
            runner = JobRunner(handler, layout, store, _settings(job.config), progress)
        return _run(runner)
    finally:
        store.close()


def _settings(config: dict) -> EngineSettings:
    return EngineSettings(batch_size=int(config.get("batch_size", 100)))


def _read_manifest(layout: JobLayout) -> dict:
    try:
        return orjson.loads(layout.manifest.read_bytes())
    except (OSError, orjson.JSONDecodeError):
        raise UsageError(f"job {layout.job_id} has no readable manifest; run it again") from None


def _run(runner: JobRunner) -> JobRecord:
    async def main() -> JobRecord:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, runner.stop_requested.set)
        return await runner.run()

    job = asyncio.run(main())
    if job.status is not JobStatus.COMPLETED:
        raise Interrupted(job.job_id)
    return job

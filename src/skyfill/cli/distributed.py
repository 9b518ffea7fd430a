"""Distributed mode: `skyfill submit`, `skyfill worker`, `skyfill enqueue` against one Redis.

skyfill submit --state redis://host:6379/0 --dids dids.txt --workdir /shared/skyfill
skyfill worker --state redis://host:6379/0          # on as many machines as you like
skyfill enqueue JOB_ID did:plc:… --state redis://host:6379/0
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Any

import click

from skyfill.atproto.did import validate_supported_did
from skyfill.atproto.exceptions import InvalidDid
from skyfill.cli import session
from skyfill.cli.backfill import backfill_options, build_handler, previous_root
from skyfill.cli.observe import observe_options, observing
from skyfill.cli.options import progress_option, with_env_vars
from skyfill.engine.distributed.node import NodeSettings, default_worker_id
from skyfill.engine.model import PHASE_AGGREGATE, Batch, JobStatus
from skyfill.engine.planner import worker_tasks
from skyfill.engine.state.redis import RedisStateStore
from skyfill.errors import UsageError
from skyfill.urls import redact_url

IDLE_POLL_SECONDS = 2.0


def state_option(required: bool) -> Any:
    return click.option(
        "--state",
        "state_url",
        required=required,
        envvar="SKYFILL_STATE",
        show_envvar=True,
        help="Redis URL of the shared state (redis://[:password@]host:port/db or rediss://).",
    )


@click.command()
@backfill_options
@state_option(required=True)
def submit(workdir: Path | str, state_url: str, **options: Any) -> None:
    """Plan a job into Redis and queue its batches; `skyfill worker` processes run it.

    --workdir may be a shared directory or any fsspec URL (s3://bucket/prefix: set
    AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for an S3-compatible
    store)."""
    job_id = options["job_id"] or session.new_job_id()
    session.check_job_id(job_id)
    if options.get("previous"):
        if isinstance(workdir, str):
            raise UsageError("--previous needs a --workdir that is a directory, not a URL")
        options["previous"] = previous_root(workdir, options["previous"])
    handler = build_handler(options, job_id)  # a sink password stays out of Redis
    if handler.config.follow:
        raise UsageError("--follow runs with `skyfill run` on one machine, not in distributed mode")
    location = workdir if isinstance(workdir, str) else str(workdir.resolve())
    job = session.submit_distributed(handler, location, job_id, state_url)
    click.echo(
        f"job {job_id}: {job.item_count} DIDs queued in {redact_url(state_url)}; "
        f"start workers with `skyfill worker --state URL --job {job_id}`"
    )


@click.command()
@state_option(required=True)
@click.option("--job", "job_id", help="Serve only this job (default: every running job).")
@click.option("--worker-id", help="This worker's name (default: host:pid).")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    help="Concurrent fetches of this worker (default: the job's --concurrency).",
)
@click.option(
    "--visibility-timeout",
    type=click.FloatRange(min=0.5),
    default=60.0,
    show_default=True,
    help="Seconds a batch claimed by a silent worker waits before another worker takes it.",
)
@click.option(
    "--exit-when-idle",
    is_flag=True,
    help="Exit when no registered job has work left (for batch schedulers such as Slurm).",
)
@click.option(
    "--wait-for-job",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds to wait for the job (--job) to be submitted, or with --exit-when-idle for "
    "a first job, before giving up: workers may start before `skyfill submit` ends.",
)
@progress_option
@observe_options
def worker(
    state_url: str,
    job_id: str | None,
    worker_id: str | None,
    concurrency: int | None,
    visibility_timeout: float,
    exit_when_idle: bool,
    wait_for_job: float,
    progress: str,
    **observe: Any,
) -> None:
    """Claim batches of running jobs from Redis and process them, until stopped."""
    deadline = time.monotonic() + wait_for_job
    settings = NodeSettings(
        worker_id=worker_id or default_worker_id(), visibility_timeout=visibility_timeout
    )
    overrides = {"concurrency": concurrency} if concurrency else {}

    def serve(name: str) -> None:
        with observing(
            Path("."), name, progress=progress, command="worker", state_url=state_url, **observe
        ) as shown:
            job = session.serve_job(state_url, name, settings, overrides, shown)
        click.echo(f"job {name}: {job.status}", err=True)

    if wait_for_job:
        session.prepare_worker()  # while the job (or, without --job, a first one) comes
    if job_id is not None:
        session.check_job_id(job_id)
        if wait_for_job:
            session.wait_for_job(state_url, job_id, deadline)
        serve(job_id)
        return
    while True:
        active = session.active_jobs(state_url)
        for name in active:
            serve(name)
            deadline = 0.0  # the wait was for a first job
        if not active:
            waiting = time.monotonic() < deadline
            if exit_when_idle and not waiting:
                return
            time.sleep(session.WAIT_POLL_SECONDS if waiting else IDLE_POLL_SECONDS)


@click.command()
@click.argument("job_id")
@click.argument("dids", nargs=-1)
@click.option(
    "--dids",
    "dids_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A file of DIDs to add (one per line), besides those given as arguments.",
)
@state_option(required=True)
def enqueue(job_id: str, dids: tuple[str, ...], dids_file: Path | None, state_url: str) -> None:
    """Add DIDs to a running job (those already in it are skipped)."""
    session.check_job_id(job_id)
    wanted = list(dids) + (dids_file.read_text().split() if dids_file else [])
    try:
        valid = list(dict.fromkeys(validate_supported_did(d) for d in wanted))
    except InvalidDid as exc:
        raise UsageError(str(exc)) from None
    if not valid:
        raise UsageError("no DID given: `skyfill enqueue JOB_ID DID… [--dids FILE]`")
    with session.open_redis_job(state_url, job_id) as (layout, store):
        job = store.job()
        assert job is not None
        if job.status not in (JobStatus.RUNNING, JobStatus.PAUSED) or job.phase == PHASE_AGGREGATE:
            raise UsageError(
                f"job {job_id} is {job.status} in phase {job.phase}: it takes no more DIDs; "
                "submit a new job"
            )
        new = [d for d in valid if d not in store.known_items(valid)]
        if not new:
            click.echo(f"job {job_id}: all {len(valid)} DIDs are in the job already")
            return
        batches = _extra_batches(new, job.phase, store, int(job.config.get("batch_size", 100)))
        session.write_batches(layout, batches)
        added = store.add_items(batches, worker_tasks(batches))
    click.echo(
        f"job {job_id}: added {added} DIDs in {len(batches)} batches "
        f"({len(valid) - added} already in the job)"
    )


def _extra_batches(items: list[str], phase: str, store: RedisStateStore, size: int) -> list[Batch]:
    group = next((t.group for t in store.tasks(phase)), "initial_batch")
    tag = f"x{int(time.time())}{secrets.token_hex(2)}"
    return [
        Batch(f"{tag}-batch-{i:04d}", phase, group, tuple(items[start : start + size]))
        for i, start in enumerate(range(0, len(items), size))
    ]


with_env_vars(submit)

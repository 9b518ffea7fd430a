"""Job control: resume, status, cancel, pause, retry."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click
import orjson

from skyfill.backfill.config import BackfillConfig
from skyfill.cli import session
from skyfill.cli.distributed import state_option
from skyfill.cli.follow import follow_after, follow_options, recording_while
from skyfill.cli.observe import observe_options, observing
from skyfill.cli.options import progress_option, workdir_option
from skyfill.cli.status import job_status, render_status
from skyfill.cli.summary import summarize
from skyfill.engine.distributed.node import NodeSettings, default_worker_id
from skyfill.engine.layout import JobLayout
from skyfill.engine.lifecycle import STOPPING, stop_unattended
from skyfill.engine.model import JobStatus
from skyfill.errors import UsageError
from skyfill.firehose.follow import follow_status, render_follow_status
from skyfill.firehose.status import render_stream_status, stream_ids, stream_status
from skyfill.labels.status import label_stream_ids, labels_status, render_labels_status

STOP_WAIT_SECONDS = 15.0


def _layout(workdir: Path, job_id: str) -> JobLayout:
    session.check_job_id(job_id)
    return JobLayout(workdir.resolve(), job_id)


@click.command()
@click.argument("job_id")
@workdir_option
@state_option(required=False)
@progress_option
@observe_options
@follow_options
def resume(
    job_id: str,
    workdir: Path,
    state_url: str | None,
    progress: str,
    until_live: bool,
    duration: float | None,
    **observe: Any,
) -> None:
    """Continue a stopped, paused, cancelled or crashed job where it stopped (a job
    run with --follow: its snapshots, then its stream).

    With --state (distributed mode): put its unfinished batches back in the queue and work
    on it as one more worker."""
    started = time.monotonic()
    if state_url:
        session.check_job_id(job_id)
        settings = NodeSettings(worker_id=default_worker_id())
        with observing(
            workdir, job_id, progress=progress, command="resume", state_url=state_url, **observe
        ) as shown:
            job = session.resume_distributed(state_url, job_id, settings, shown)
        with session.open_redis_job(state_url, job_id) as (layout, store):
            click.echo(summarize(layout, job, started, store))
        return
    layout = _layout(workdir, job_id)
    config = _follow_config(layout)
    with (
        observing(layout.workdir, job_id, progress=progress, command="resume", **observe) as shown,
        recording_while(layout, config if _unfinished(layout) else None),
    ):
        job = session.resume(layout, shown)
    click.echo(summarize(layout, job, started))
    if config is not None:
        follow_after(
            layout, job, config, until_live=until_live, duration=duration, progress=progress
        )
    elif until_live or duration is not None:
        raise UsageError(f"job {job_id} does not follow a stream: --until-live/--duration")


def _follow_config(layout: JobLayout) -> BackfillConfig | None:
    """The config of a backfill job that follows its stream (None for any other)."""
    with session.open_store(layout) as store:
        job = store.job()
    if job is None or job.config.get("follow") is not True:
        return None
    return BackfillConfig.from_dict(job.config)


def _unfinished(layout: JobLayout) -> bool:
    with session.open_store(layout) as store:
        job = store.job()
    return job is None or job.status is not JobStatus.COMPLETED


@click.command()
@click.argument("job_id", required=False)
@workdir_option
@state_option(required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def status(job_id: str | None, workdir: Path, state_url: str | None, as_json: bool) -> None:
    """A job's phase, DIDs per status, tasks, throughput and ETA (no JOB_ID: all jobs);
    for a stream's id (`skyfill firehose`): its cursor, rates, lag and repos; for a label
    stream's (`skyfill labels`): each labeler's cursor and DID, and the labels applied."""
    if job_id is None:
        jobs = []
        for name in session.job_ids(workdir, state_url):
            with session.open_job(name, workdir, state_url) as (_, store):
                jobs.append(job_status(store))
        if as_json:
            click.echo(orjson.dumps(jobs, option=orjson.OPT_INDENT_2).decode())
        else:
            for job in jobs:
                click.echo(
                    f"{job['job_id']:<40} {job['status']:<12} {job['phase']:<10} "
                    f"{job['done']}/{job['items']}"
                )
        return
    if state_url is None and job_id in label_stream_ids(workdir):
        facts = labels_status(workdir, job_id)
        click.echo(
            orjson.dumps(facts, option=orjson.OPT_INDENT_2).decode()
            if as_json
            else render_labels_status(facts)
        )
        return
    if state_url is None and job_id in stream_ids(workdir):
        facts = stream_status(workdir, job_id)
        click.echo(
            orjson.dumps(facts, option=orjson.OPT_INDENT_2).decode()
            if as_json
            else render_stream_status(facts)
        )
        return
    session.check_job_id(job_id)
    with session.open_job(job_id, workdir, state_url) as (layout, store):
        facts = job_status(store)
    follow = None
    if state_url is None:
        follow = follow_status(layout.root, layout.workdir, facts["items"], facts["done"])
    if follow is not None:
        facts["follow"] = follow
    if as_json:
        click.echo(orjson.dumps(facts, option=orjson.OPT_INDENT_2).decode())
        return
    click.echo(render_status(facts))
    if follow is not None:
        click.echo(render_follow_status(follow))


def _stop(job_id: str, workdir: Path, state_url: str | None, action: str) -> None:
    target = STOPPING[action]
    session.check_job_id(job_id)
    with session.open_job(job_id, workdir, state_url) as (_, store):
        job = store.job()
        if job is None or job.status is JobStatus.COMPLETED:
            raise UsageError(
                f"job {job_id} is not running (it is {job.status if job else 'unplanned'})"
            )
        if not session.is_live(job):
            stop_unattended(store, action)
            click.echo(f"job {job_id}: {target} (no worker was running)")
            return
        store.request_control(action)
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        while time.monotonic() < deadline:
            job = store.job()
            if job is not None and job.status is target:
                click.echo(f"job {job_id}: {target}; continue with `skyfill resume {job_id}`")
                return
            time.sleep(0.1)
    raise UsageError(f"job {job_id}: asked to {action}, but it has not stopped yet")


@click.command()
@click.argument("job_id")
@workdir_option
@state_option(required=False)
def cancel(job_id: str, workdir: Path, state_url: str | None) -> None:
    """Emergency stop: running workers stop within seconds; the job stays resumable."""
    _stop(job_id, workdir, state_url, "cancel")


@click.command()
@click.argument("job_id")
@workdir_option
@state_option(required=False)
def pause(job_id: str, workdir: Path, state_url: str | None) -> None:
    """Pause a running job; `skyfill resume` continues it."""
    _stop(job_id, workdir, state_url, "pause")


@click.command()
@click.argument("job_id")
@click.option(
    "--failed",
    is_flag=True,
    help="Retry every DID whose status is `failed` (e.g. after fixing the network).",
)
@workdir_option
@progress_option
@observe_options
def retry(job_id: str, failed: bool, workdir: Path, progress: str, **observe: Any) -> None:
    """Run a new retry phase over the DIDs that ended failed, then aggregate again."""
    if not failed:
        raise UsageError("say which DIDs to retry: `skyfill retry JOB_ID --failed`")
    layout = _layout(workdir, job_id)
    started = time.monotonic()
    with (
        observing(layout.workdir, job_id, progress=progress, command="retry", **observe) as shown,
        session.open_store(layout) as store,
    ):
        session.ensure_not_running(store)
        runner = session.stored_runner(layout, store, shown)
        plan = runner.plan_failed_retry()
        if plan is None:
            click.echo(f"job {job_id}: no DID ended failed; nothing to retry")
            return
        click.echo(f"job {job_id}: {plan.phase} retries {len(plan.failed_items)} DIDs", err=True)
        job = session.run(runner)
    click.echo(summarize(layout, job, started))

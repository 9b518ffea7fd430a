"""`skyfill run`, `plan` and `refresh`: backfill jobs configured by BackfillConfig's flags
(declared on its fields), from the command line, SKYFILL_* variables or a config file."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.handler import BackfillHandler
from skyfill.cli import session
from skyfill.cli.dataclass_options import dataclass_options, from_options
from skyfill.cli.follow import follow_after, follow_options, recording_while
from skyfill.cli.observe import observe_options, observing
from skyfill.cli.options import config_option, progress_option, with_env_vars, workdir_option
from skyfill.cli.plan import describe_plan
from skyfill.cli.summary import summarize
from skyfill.engine.discovery import discovers
from skyfill.engine.layout import JobLayout
from skyfill.errors import UsageError
from skyfill.monitor.progress import make_progress
from skyfill.sinks.factory import split_password


def backfill_options(f: Callable) -> Callable:
    """BackfillConfig's flags, with --workdir and --config."""
    return config_option(workdir_option(dataclass_options(BackfillConfig)(f)))


def previous_root(workdir: Path, job_id: str | None) -> str | None:
    """--previous JOB_ID: the finished job's directory in <workdir>."""
    if not job_id:
        return None
    session.check_job_id(job_id)
    root = JobLayout(workdir.resolve(), job_id).root
    if not (root / "aggregation" / "manifest.json").exists():
        raise UsageError(f"--previous {job_id}: no finished job {job_id} in {workdir}")
    return str(root)


def build_handler(options: dict[str, Any], job_id: str) -> BackfillHandler:
    """The handler of the job the options describe; the sink URL's password (if any) goes
    to the handler only, never into the config that is stored."""
    sink, password = split_password(options["sink"])
    config = from_options(BackfillConfig, {**options, "sink": sink}, job_id=job_id)
    return BackfillHandler(config, password)


@click.command()
@backfill_options
@progress_option
@observe_options
@follow_options
def run(
    workdir: Path,
    progress: str,
    progress_interval: float,
    log_level: str,
    metrics_port: int,
    metrics_host: str,
    until_live: bool,
    duration: float | None,
    **options: Any,
) -> None:
    """Backfill every DID of a file into <workdir>/jobs/<job_id>/output/ (with --follow:
    then keep it current from the host's event stream)."""
    job_id = options["job_id"] or session.new_job_id()
    session.check_job_id(job_id)
    options["previous"] = previous_root(workdir, options.get("previous"))
    handler = build_handler(options, job_id)
    if (until_live or duration is not None) and not handler.config.follow:
        raise UsageError("--until-live and --duration go with --follow")
    if handler.config.labels and not handler.config.follow:
        raise UsageError("--labels goes with --follow (labels are followed with the stream)")
    handler.config.stream_host  # noqa: B018 - raises now if --follow names no one stream
    layout = JobLayout(workdir.resolve(), job_id)
    started = time.monotonic()
    click.echo(f"job {job_id} in {layout.root}", err=True)
    with (
        observing(
            layout.workdir,
            job_id,
            progress=progress,
            progress_interval=progress_interval,
            log_level=log_level,
            metrics_port=metrics_port,
            metrics_host=metrics_host,
            command="run",
        ) as shown,
        recording_while(layout, handler.config if handler.config.follow else None),
    ):
        job = session.submit_and_run(handler, layout, shown)
    click.echo(summarize(layout, job, started))
    if handler.config.follow:
        follow_after(
            layout,
            job,
            handler.config,
            until_live=until_live,
            duration=duration,
            progress=progress,
            sink_password=split_password(options["sink"])[1],
        )


@click.command()
@backfill_options
def plan(workdir: Path, **options: Any) -> None:
    """Dry run: validate the input and config, show batches, tasks, hosts and estimates."""
    options["previous"] = previous_root(workdir, options.get("previous"))
    handler = build_handler(options, options["job_id"] or "plan")
    planned = handler.plan()
    if not planned.items and not discovers(handler):  # what `run` refuses, the dry run too
        raise UsageError("the input holds no valid DID")
    click.echo(describe_plan(planned, handler.config))


with_env_vars(run)
with_env_vars(plan)


@click.command()
@click.argument("job_id")
@click.option("--job-id", "new_id", help="Id of the refresh job (default: refresh-<date>-<hex>).")
@workdir_option
@progress_option
def refresh(job_id: str, new_id: str | None, workdir: Path, progress: str) -> None:
    """Bring a finished job up to date: a new job over its DIDs (and hosts, listed again)
    with its config, fetching only repos whose rev changed (getLatestCommit)."""
    root = previous_root(workdir, job_id)
    with session.open_store(JobLayout(workdir.resolve(), job_id)) as store:
        job = store.job()
        assert job is not None
        config = dict(job.config)
    new_id = new_id or session.new_job_id("refresh")
    session.check_job_id(new_id)
    config.update(job_id=new_id, previous=root, dids_file=None)  # its DIDs come along
    handler = BackfillHandler(BackfillConfig.from_dict(config))
    layout = JobLayout(workdir.resolve(), new_id)
    started = time.monotonic()
    click.echo(f"job {new_id} refreshes {job_id} in {layout.root}", err=True)
    job = session.submit_and_run(handler, layout, make_progress(progress))
    click.echo(summarize(layout, job, started))

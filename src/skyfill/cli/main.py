"""`skyfill`: the command-line entry point. Errors end as one line and a non-zero exit."""

from __future__ import annotations

import os
import sys
import time
import traceback
from pathlib import Path

import click

from skyfill import __version__
from skyfill.backfill.config import GIB, BackfillConfig, parse_size
from skyfill.backfill.handler import BackfillHandler
from skyfill.cli import session
from skyfill.cli.registry import handler_for
from skyfill.cli.summary import summarize
from skyfill.engine.layout import JobLayout, jobs_in
from skyfill.engine.runner import EngineSettings, JobError
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.errors import UsageError
from skyfill.monitor.progress import make_progress

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

workdir_option = click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=lambda: os.environ.get("SKYFILL_WORKDIR", "skyfill-work"),
    show_default="skyfill-work",
    help="Directory that holds jobs/<job_id>/ (env SKYFILL_WORKDIR).",
)
progress_option = click.option(
    "--progress",
    type=click.Choice(["auto", "rich", "log", "none"]),
    default="auto",
    show_default=True,
    help="Live progress: a bar on a terminal, JSON log lines elsewhere.",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="skyfill")
def cli() -> None:
    """Backfill AT Protocol (Bluesky) repositories into an analysis-ready dataset."""


@cli.command()
@click.option(
    "--dids",
    "dids_file",
    required=True,
    type=click.Path(path_type=Path),
    help="File with one DID per line (# comments and blank lines ignored).",
)
@click.option("--job-id", help="Job id (default: backfill-<date>-<random>).")
@workdir_option
@click.option(
    "--plc-url",
    default="https://plc.directory",
    show_default=True,
    help="PLC directory used to resolve did:plc.",
)
@click.option(
    "--concurrency", type=int, default=32, show_default=True, help="Repos fetched at once."
)
@click.option(
    "--batch-size",
    type=int,
    default=100,
    show_default=True,
    help="DIDs per batch (one worker task each).",
)
@click.option(
    "--max-repo-bytes",
    default="1g",
    show_default=True,
    help="Largest repo CAR accepted (e.g. 1g, 300m); larger ones end `failed`.",
)
@click.option(
    "--attempts",
    type=int,
    default=3,
    show_default=True,
    help="Tries per DID for 429/5xx/timeouts/network errors within this run.",
)
@click.option(
    "--decode-processes",
    type=int,
    default=min(2, os.cpu_count() or 1),
    show_default="min(2, cores)",
    help="Processes decoding CARs (0: in-process).",
)
@click.option(
    "--timeout",
    "read_timeout",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds of silence allowed while reading a response.",
)
@click.option(
    "--allow-private-network",
    is_flag=True,
    help="Allow PDS/PLC endpoints on loopback/private addresses (tests, local nets).",
)
@progress_option
def run(
    dids_file: Path,
    job_id: str | None,
    workdir: Path,
    plc_url: str,
    concurrency: int,
    batch_size: int,
    max_repo_bytes: str,
    attempts: int,
    decode_processes: int,
    read_timeout: float,
    allow_private_network: bool,
    progress: str,
) -> None:
    """Backfill every DID of a file into <workdir>/jobs/<job_id>/output/."""
    job_id = job_id or session.new_job_id()
    _check_job_id(job_id)
    config = BackfillConfig(
        dids_file=str(dids_file),
        job_id=job_id,
        plc_url=plc_url,
        concurrency=concurrency,
        batch_size=batch_size,
        max_repo_bytes=parse_size(max_repo_bytes),
        attempts=attempts,
        decode_processes=decode_processes,
        read_timeout=read_timeout,
        allow_private_network=allow_private_network,
    )
    layout = JobLayout(workdir.resolve(), job_id)
    started = time.monotonic()
    click.echo(f"job {job_id} in {layout.root}", err=True)
    job = session.submit_and_run(
        BackfillHandler(config),
        layout,
        EngineSettings(batch_size=batch_size),
        make_progress(progress),
    )
    click.echo(summarize(layout, job, started))


@cli.command()
@click.argument("job_id")
@workdir_option
@progress_option
def resume(job_id: str, workdir: Path, progress: str) -> None:
    """Continue a stopped or crashed job where it stopped."""
    _check_job_id(job_id)
    layout = JobLayout(workdir.resolve(), job_id)
    started = time.monotonic()
    job = session.resume(layout, make_progress(progress), handler_for)
    click.echo(summarize(layout, job, started))


@cli.command()
@click.argument("job_id", required=False)
@workdir_option
def status(job_id: str | None, workdir: Path) -> None:
    """Show a job's state and its DIDs by status (without JOB_ID: list the jobs)."""
    if job_id is None:
        for name in jobs_in(workdir.resolve()):
            click.echo(name)
        return
    layout = JobLayout(workdir.resolve(), job_id)
    if not layout.state_db.exists():
        raise UsageError(f"no job {job_id} in {workdir}")
    store = SqliteStateStore(layout.state_db)
    try:
        job = store.job()
        if job is None:
            raise UsageError(f"job {job_id} was never fully planned; `skyfill resume` it")
        counts = store.status_counts()
        click.echo(f"job {job.job_id}: {job.status} (phase {job.phase}), {job.item_count} DIDs")
        for name, count in sorted(counts.items()):
            click.echo(f"  {name:<14} {count}")
    finally:
        store.close()


@cli.command()
@click.option(
    "--accounts",
    type=int,
    default=300,
    show_default=True,
    help="Accounts in the simulated network.",
)
@click.option("--hosts", type=int, default=3, show_default=True, help="Simulated PDS hosts.")
@click.option(
    "--mean-records",
    type=int,
    default=80,
    show_default=True,
    help="Typical records per account (sizes are heavy-tailed).",
)
@workdir_option
@progress_option
def demo(accounts: int, hosts: int, mean_records: int, workdir: Path, progress: str) -> None:
    """Start a simulated network on loopback and backfill it end to end."""
    from skyfill.cli.demo import run_demo

    run_demo(accounts, hosts, mean_records, workdir.resolve(), progress)


def _check_job_id(job_id: str) -> None:
    if not job_id or "/" in job_id or job_id.startswith(".") or len(job_id) > 128:
        raise UsageError(f"invalid job id {job_id!r}: use letters, digits, '-' and '_'")


def main() -> None:
    """Entry point: turns every failure into one line on stderr and an exit code."""
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("skyfill: aborted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except UsageError as exc:
        click.echo(f"skyfill: error: {exc}", err=True)
        sys.exit(EXIT_USAGE)
    except session.Interrupted as exc:
        click.echo(f"skyfill: stopped; continue with `skyfill resume {exc}`", err=True)
        sys.exit(EXIT_INTERRUPTED)
    except JobError as exc:
        click.echo(f"skyfill: job failed: {exc}", err=True)
        sys.exit(1)
    except Exception as exc:  # the last line of defence: never a traceback unless asked
        if os.environ.get("SKYFILL_DEBUG"):
            traceback.print_exc()
        click.echo(
            f"skyfill: internal error: {type(exc).__name__}: {exc} "
            "(set SKYFILL_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(1)
    sys.exit(0)


__all__ = ["GIB", "cli", "main"]

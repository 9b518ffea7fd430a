"""`skyfill`: the command-line entry point. Errors end as one line and a non-zero exit."""

from __future__ import annotations

import os
import sys
import traceback

import click

from skyfill import __version__
from skyfill.cli import session
from skyfill.cli.backfill import plan, refresh, run
from skyfill.cli.control import cancel, pause, resume, retry, status
from skyfill.cli.demo import demo
from skyfill.cli.distributed import enqueue, submit, worker
from skyfill.cli.firehose import firehose
from skyfill.cli.monitor import dashboard, monitor, report
from skyfill.cli.slurm import slurm
from skyfill.engine.runner import JobError
from skyfill.errors import UsageError
from skyfill.firehose.errors import StreamStopped
from skyfill.sinks.exceptions import SinkError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="skyfill")
def cli() -> None:
    """Backfill AT Protocol (Bluesky) repositories into an analysis-ready dataset."""


for command in (
    run,
    plan,
    refresh,
    submit,
    worker,
    enqueue,
    slurm,
    resume,
    status,
    cancel,
    pause,
    retry,
    demo,
    firehose,
    monitor,
    dashboard,
    report,
):
    cli.add_command(command)


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
    except SinkError as exc:  # e.g. the database cannot be reached: checked before fetching
        click.echo(f"skyfill: error: {exc}", err=True)
        sys.exit(1)
    except StreamStopped as exc:  # the host refused it (FutureCursor), a decode worker died
        click.echo(f"skyfill: error: {exc.message}", err=True)
        sys.exit(1)
    except session.Interrupted as exc:
        click.echo(
            f"skyfill: job {exc.job.job_id} {exc.job.status}; continue with "
            f"`skyfill resume {exc.job.job_id}`",
            err=True,
        )
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

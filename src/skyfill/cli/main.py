"""`skyfill`: the command-line entry point. Errors end as one line and a non-zero exit."""

from __future__ import annotations

import importlib
import os
import sys
import traceback

import click

from skyfill import __version__
from skyfill.errors import UsageError
from skyfill.firehose.errors import StreamStopped
from skyfill.sinks.exceptions import SinkError

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


COMMANDS = {
    "run": "skyfill.cli.backfill:run",
    "plan": "skyfill.cli.backfill:plan",
    "refresh": "skyfill.cli.backfill:refresh",
    "submit": "skyfill.cli.distributed:submit",
    "worker": "skyfill.cli.distributed:worker",
    "enqueue": "skyfill.cli.distributed:enqueue",
    "slurm": "skyfill.cli.slurm:slurm",
    "resume": "skyfill.cli.control:resume",
    "status": "skyfill.cli.control:status",
    "cancel": "skyfill.cli.control:cancel",
    "pause": "skyfill.cli.control:pause",
    "retry": "skyfill.cli.control:retry",
    "demo": "skyfill.cli.demo:demo",
    "firehose": "skyfill.cli.firehose:firehose",
    "labels": "skyfill.cli.labels:labels",
    "monitor": "skyfill.cli.monitor:monitor",
    "dashboard": "skyfill.cli.monitor:dashboard",
    "report": "skyfill.cli.monitor:report",
    "query": "skyfill.cli.query:query",
    "ingest": "skyfill.cli.live:ingest",
    "index": "skyfill.cli.live:index",
    "live-status": "skyfill.cli.live:live_status",
}
"""Each command and where it lives: a command's module is imported only when it runs (or
for --help), so `skyfill firehose` does not load the job engine, Redis or the dashboard."""


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, prog_name="skyfill")
def cli() -> None:
    """Backfill AT Protocol (Bluesky) repositories into an analysis-ready dataset."""


def _is(exc: BaseException, module: str, name: str) -> bool:
    """Whether `exc` is of the class `name` of `module`; never true when the module was not
    imported (the command that raises it would have imported it), so it is not imported."""
    found = sys.modules.get(module)
    cls = getattr(found, name, None) if found is not None else None
    return isinstance(cls, type) and isinstance(exc, cls)


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
    except Exception as exc:  # what the commands raise, by the modules they loaded
        code = _known_failure(exc)
        if code is None:
            _internal_error(exc)
        sys.exit(1 if code is None else code)
    sys.exit(0)


def _known_failure(exc: Exception) -> int | None:
    """Say a failure of a command in one line; its exit code (None: not one we know)."""
    if isinstance(exc, StreamStopped):  # the host refused it (FutureCursor), a worker died
        click.echo(f"skyfill: error: {exc.message}", err=True)
        return 1
    if _is(exc, "skyfill.atproto.stream.exceptions", "StreamUnavailable"):  # no host to probe
        click.echo(f"skyfill: error: {exc}", err=True)
        return 1
    if _is(exc, "skyfill.net.exceptions", "PrivateNetworkRefused"):  # a stream's host
        click.echo(f"skyfill: error: {exc}", err=True)
        return EXIT_USAGE
    if _is(exc, "skyfill.labels.errors", "LabelsStopped"):  # a labeler refused its stream
        click.echo(f"skyfill: error: {exc}", err=True)
        return 1
    if _is(exc, "skyfill.cli.session", "Interrupted"):
        job = exc.job  # type: ignore[attr-defined]
        click.echo(
            f"skyfill: job {job.job_id} {job.status}; continue with `skyfill resume {job.job_id}`",
            err=True,
        )
        return EXIT_INTERRUPTED
    if _is(exc, "skyfill.engine.runner", "JobError"):
        click.echo(f"skyfill: job failed: {exc}", err=True)
        return 1
    return None


def _internal_error(exc: Exception) -> None:
    """The last line of defence: never a traceback unless asked."""
    if os.environ.get("SKYFILL_DEBUG"):
        traceback.print_exc()
    click.echo(
        f"skyfill: internal error: {type(exc).__name__}: {exc} "
        "(set SKYFILL_DEBUG=1 for the traceback)",
        err=True,
    )

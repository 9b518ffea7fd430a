"""`skyfill firehose`: replay and follow a host's event stream into a sink, and
`skyfill firehose compact`: a Parquet event log (plus a snapshot) as current-state tables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from skyfill.cli.dataclass_options import dataclass_options, from_options
from skyfill.cli.observe import observe_options
from skyfill.cli.options import config_option, progress_option, with_env_vars, workdir_option
from skyfill.firehose.config import BACKGROUND, FirehoseConfig
from skyfill.firehose.progress import summary_line
from skyfill.firehose.run import run_stream
from skyfill.monitor.logs import configure_logging


@click.group(invoke_without_command=True)
@config_option
@workdir_option
@dataclass_options(FirehoseConfig)
@progress_option
@observe_options
@click.pass_context
def firehose(
    ctx: click.Context,
    workdir: Path,
    progress: str,
    progress_interval: float,
    log_level: str,
    metrics_port: int,
    metrics_host: str,
    **options: Any,
) -> None:
    """Replay a host's event stream (com.atproto.sync.subscribeRepos) from a cursor or a
    time window into a sink, verifying every commit, and keep following it.

    The cursor is saved with the rows: run the same command again to resume."""
    if ctx.invoked_subcommand is not None:
        return
    del metrics_host  # the stream's metrics listen on 127.0.0.1
    explicit = {
        name
        for name in BACKGROUND
        if ctx.get_parameter_source(name) not in (None, click.core.ParameterSource.DEFAULT)
    }
    config = from_options(FirehoseConfig, options).with_background(explicit)
    configure_logging(log_level)
    facts = run_stream(
        config,
        workdir.resolve(),
        progress=progress,
        progress_interval=progress_interval,
        metrics_port=metrics_port,
    )
    state = "live" if facts.get("live") else "stopped"
    click.echo(f"firehose {config.stream_id} {state}: {summary_line(facts)}")


@firehose.command()
@click.argument("log_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--snapshot",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A backfill job's output directory (its records and repos datasets) to start from.",
)
def compact(log_dir: Path, out_dir: Path, snapshot: Path | None) -> None:
    """Turn a Parquet event log (LOG_DIR, a --sink directory of `skyfill firehose`) and an
    optional snapshot into current-state `records` and `repos` datasets in OUT_DIR."""
    from skyfill.sinks.compact import compact as compact_log

    facts = compact_log(log_dir, out_dir, snapshot)
    click.echo(f"compacted into {out_dir}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))


with_env_vars(firehose)

"""`skyfill labels`: follow labelers' label streams into a sink, every signature checked,
and `skyfill labels compact`: a Parquet label log as the labels in force."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from skyfill.cli.dataclass_options import dataclass_options, from_options
from skyfill.cli.options import config_option, progress_option, with_env_vars, workdir_option
from skyfill.labels.config import LabelsConfig
from skyfill.labels.run import run_labels
from skyfill.labels.stats import summary_line
from skyfill.monitor.logs import LEVELS, configure_logging


@click.group(invoke_without_command=True)
@config_option
@workdir_option
@dataclass_options(LabelsConfig)
@progress_option
@click.option(
    "--progress-interval",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds between JSON progress lines (off a terminal).",
)
@click.option(
    "--log-level",
    type=click.Choice(LEVELS, case_sensitive=False),
    default="info",
    show_default=True,
    help="Least severe log records shown (JSON lines on stderr off a terminal).",
)
@click.pass_context
def labels(
    ctx: click.Context,
    workdir: Path,
    progress: str,
    progress_interval: float,
    log_level: str,
    **options: Any,
) -> None:
    """Follow labelers' label streams (com.atproto.label.subscribeLabels) into a sink,
    checking each label's signature with its labeler's #atproto_label key.

    The cursor of each labeler is saved with the labels: run the same command again to
    resume."""
    if ctx.invoked_subcommand is not None:
        return
    config = from_options(LabelsConfig, options)
    configure_logging(log_level)
    facts = run_labels(
        config, workdir.resolve(), progress=progress, progress_interval=progress_interval
    )
    state = "live" if facts.get("live") else "stopped"
    click.echo(f"labels {config.stream_id} {state}: {summary_line(facts)}")


@labels.command()
@click.argument("log_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
def compact(log_dir: Path, out_dir: Path) -> None:
    """Fold a Parquet label log (LOG_DIR, a --sink directory of `skyfill labels`) into
    OUT_DIR/labels.parquet (the latest label of each key, negations included) and
    OUT_DIR/labels_current.parquet (the labels in force now)."""
    from skyfill.sinks.labels_compact import compact_labels

    facts = compact_labels(log_dir, out_dir)
    click.echo(f"compacted into {out_dir}: " + ", ".join(f"{k} {v}" for k, v in facts.items()))


with_env_vars(labels)

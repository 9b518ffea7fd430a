"""`skyfill ingest` and `skyfill index`: the live topology on Redis streams (one ingester
per source writes events and repos to snapshot; any number of index workers apply them
to PostgreSQL), as `firehose/ingest.py` and `firehose/index.py` describe."""

from __future__ import annotations

from typing import Any

import click

from skyfill.cli.dataclass_options import dataclass_options, from_options
from skyfill.cli.options import config_option, with_env_vars
from skyfill.firehose.index import run_index
from skyfill.firehose.ingest import add_repos, run_ingest
from skyfill.firehose.live_config import IndexConfig, IngestConfig
from skyfill.monitor.logs import configure_logging


@click.command()
@config_option
@dataclass_options(IngestConfig)
@click.option("--log-level", default="info", show_default=True, help="Log level.")
def ingest(log_level: str, **options: Any) -> None:
    """Write a host's event stream (and the repos it lists, to snapshot) into Redis
    streams partitioned by DID, with a saved cursor: run it again to go on."""
    configure_logging(log_level)
    config = from_options(IngestConfig, options)
    if config.add_repo:
        added = add_repos(config)
        click.echo(f"ingest {config.name}: {added} repo(s) put in the backfill streams")
        return
    counters = run_ingest(config)
    state = "live" if counters.live else "stopped"
    click.echo(
        f"ingest {config.name} {state}: {counters.events} events written (seq {counters.seq}), "
        f"{counters.labels} labels, "
        f"{counters.queued_repos} repos queued for a snapshot, {counters.trimmed} entries "
        f"trimmed, {counters.reconnects} reconnects"
    )


@click.command()
@config_option
@dataclass_options(IndexConfig)
@click.option("--log-level", default="info", show_default=True, help="Log level.")
def index(log_level: str, **options: Any) -> None:
    """Apply the live streams in Redis to a SQL sink, as one worker of a consumer group:
    start any number, on any machine; a dead worker's partitions are taken over."""
    configure_logging(log_level)
    config = from_options(IndexConfig, options)
    totals = run_index(config)
    click.echo(
        f"index {config.name} {config.worker_id}: {totals.applied} events applied, "
        f"{totals.labels_applied} labels, "
        f"{totals.snapshots} snapshots requested, {totals.reclaimed} entries reclaimed, "
        f"partitions {sorted(totals.seen)}"
    )


@click.command("live-status")
@click.option("--state", "state_url", required=True, metavar="URL", envvar="SKYFILL_STATE",
              help="The Redis holding the live streams.")  # fmt: skip
@click.option("--name", default="live", show_default=True, help="Name of the live streams.")
@click.option("--json", "as_json", is_flag=True, help="Print the status as JSON.")
def live_status(state_url: str, name: str, as_json: bool) -> None:
    """The live streams in Redis: sources' cursors, partitions (kept, pending, not yet
    delivered, holder, cursor), workers alive, snapshots to do."""
    import orjson

    from skyfill.firehose.live_keys import connect_checked
    from skyfill.firehose.live_status import live_status as read
    from skyfill.firehose.live_status import render_live_status

    facts = read(connect_checked(state_url), name)
    click.echo(
        orjson.dumps(facts, option=orjson.OPT_INDENT_2).decode()
        if as_json
        else render_live_status(facts)
    )


with_env_vars(ingest)
with_env_vars(index)

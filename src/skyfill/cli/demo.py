"""`skyfill demo`: a simulated network on loopback, backfilled with a live progress line."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import click

from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.handler import BackfillHandler
from skyfill.cli import session
from skyfill.cli.observe import observe_options, observing
from skyfill.cli.options import progress_option, workdir_option
from skyfill.cli.summary import summarize
from skyfill.engine.layout import JobLayout
from skyfill.simnet.run import SimNetThread, SimSpec, build_network, write_files


@click.command()
@click.option(
    "--accounts",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Accounts in the simulated network.",
)
@click.option(
    "--hosts", type=click.IntRange(min=1), default=3, show_default=True, help="Simulated PDS hosts."
)
@click.option(
    "--mean-records",
    type=click.IntRange(min=1),
    default=80,
    show_default=True,
    help="Typical records per account (sizes are heavy-tailed).",
)
@workdir_option
@progress_option
@observe_options
def demo(
    accounts: int, hosts: int, mean_records: int, workdir: Path, progress: str, **observe: Any
) -> None:
    """Start a simulated network on loopback and backfill it end to end."""
    workdir = workdir.resolve()
    spec = SimSpec(
        accounts=accounts,
        hosts=hosts,
        mean_records=mean_records,
        statuses=["deactivated", "takendown", "tombstoned"],
        unknown_dids=2,
    )
    click.echo(f"building {accounts} simulated accounts on {hosts} PDS hosts ...", err=True)
    network, dids = build_network(spec)
    with SimNetThread(network) as servers:
        _, dids_file = write_files(servers, dids, workdir / "demo-network")
        click.echo(
            f"simulated network: PLC {servers.plc_url}, PDS {', '.join(servers.pds_urls)}", err=True
        )
        job_id = session.new_job_id("demo")
        config = BackfillConfig(
            dids_file=str(dids_file),
            job_id=job_id,
            plc_url=servers.plc_url,
            concurrency=32,
            batch_size=50,
            allow_private_network=True,
            retry_backoff=1.0,
        )
        layout = JobLayout(workdir, job_id)
        started = time.monotonic()
        with observing(workdir, job_id, progress=progress, command="demo", **observe) as shown:
            job = session.submit_and_run(BackfillHandler(config), layout, shown)
    click.echo(summarize(layout, job, started))

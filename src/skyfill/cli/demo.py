"""`skyfill demo`: a simulated network on loopback, backfilled with a live progress line."""

from __future__ import annotations

import time
from pathlib import Path

import click

from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.handler import BackfillHandler
from skyfill.cli import session
from skyfill.cli.summary import summarize
from skyfill.engine.layout import JobLayout
from skyfill.engine.runner import EngineSettings
from skyfill.monitor.progress import make_progress
from skyfill.simnet.run import SimNetThread, SimSpec, build_network, write_files


def run_demo(accounts: int, hosts: int, mean_records: int, workdir: Path, progress: str) -> None:
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
            f"simulated network up: PLC {servers.plc_url}, PDS {', '.join(servers.pds_urls)}",
            err=True,
        )
        job_id = session.new_job_id("demo")
        config = BackfillConfig(
            dids_file=str(dids_file),
            job_id=job_id,
            plc_url=servers.plc_url,
            concurrency=32,
            batch_size=50,
            allow_private_network=True,
        )
        layout = JobLayout(workdir, job_id)
        started = time.monotonic()
        job = session.submit_and_run(
            BackfillHandler(config),
            layout,
            EngineSettings(batch_size=config.batch_size),
            make_progress(progress, interval=2.0),
        )
    click.echo(summarize(layout, job, started))

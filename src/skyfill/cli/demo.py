"""`skyfill demo`: a simulated network on loopback, backfilled with a live progress line."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import redis

from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.handler import BackfillHandler
from skyfill.cli import session
from skyfill.cli.observe import observe_options, observing
from skyfill.cli.options import progress_option, workdir_option
from skyfill.cli.summary import summarize
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import JobStatus
from skyfill.engine.state.redis import RedisStateStore
from skyfill.errors import UsageError
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
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Distributed mode: run the job on N `skyfill worker` processes against a local "
    "redis-server (started with AOF on, stopped at the end). 0: embedded, one process.",
)
@workdir_option
@progress_option
@observe_options
def demo(
    accounts: int,
    hosts: int,
    mean_records: int,
    workers: int,
    workdir: Path,
    progress: str,
    **observe: Any,
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
        if workers:
            click.echo(run_distributed(BackfillHandler(config), layout, workers, started))
            return
        with observing(workdir, job_id, progress=progress, command="demo", **observe) as shown:
            job = session.submit_and_run(BackfillHandler(config), layout, shown)
    click.echo(summarize(layout, job, started))


def run_distributed(
    handler: BackfillHandler, layout: JobLayout, workers: int, started: float
) -> str:
    """Submit the job to a private redis-server (AOF on), run it on worker processes;
    returns the summary."""
    with local_redis(layout.workdir / "demo-redis") as url:
        click.echo(f"redis-server with AOF at {url}; {workers} workers", err=True)
        session.submit_distributed(handler, str(layout.workdir), layout.job_id, url)
        command = [sys.executable, "-m", "skyfill", "worker", "--state", url, "--job"]
        quiet = ["--progress", "none", "--log-level", "warning"]
        procs = [
            subprocess.Popen([*command, layout.job_id, "--worker-id", f"demo-{i}", *quiet])
            for i in range(workers)
        ]
        store = RedisStateStore.from_url(url, layout.job_id)
        try:
            while any(p.poll() is None for p in procs):
                job = store.job()
                if job is not None:
                    done = job.item_count - store.status_counts().get("pending", 0)
                    click.echo(f"  {job.phase:<10} {done}/{job.item_count} DIDs", err=True)
                time.sleep(1.0)
            job = store.job()
            if job is None or job.status is not JobStatus.COMPLETED:
                raise session.Interrupted(job) if job else UsageError("the demo job was lost")
            return summarize(layout, job, started, store)
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait()
            store.close()


@contextlib.contextmanager
def local_redis(directory: Path) -> Iterator[str]:
    """A redis-server on a free loopback port with the append-only file on; stopped by PID."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise UsageError("--workers needs redis-server (Debian: apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # fmt: off
    args = [
        binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory),
        "--appendonly", "yes", "--appendfsync", "always", "--save", "",
    ]
    # fmt: on
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{port}/0"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with redis.Redis.from_url(url, socket_connect_timeout=1) as probe:
                    probe.ping()
                break
            except redis.RedisError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise UsageError("redis-server did not start") from None
                time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)

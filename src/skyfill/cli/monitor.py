"""`skyfill monitor`, `skyfill dashboard`, `skyfill report`: watching and evaluating jobs
from another terminal or machine, by reading their state store (SQLite or Redis)."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import click
import orjson

from skyfill.cli.options import workdir_option
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import JobStatus
from skyfill.monitor.sources import JobSource, open_source, pick_job
from skyfill.monitor.view import render_monitor


def state_option(f: Callable) -> Callable:
    return click.option(
        "--state",
        metavar="URL",
        envvar="SKYFILL_STATE",
        show_envvar=True,
        help="Read jobs from this Redis server (redis://host:port/db) instead of --workdir.",
    )(f)


def _snapshot(source: JobSource, job_id: str) -> dict:
    from skyfill.monitor.snapshot import job_snapshot

    with source.open(job_id) as store:
        facts = job_snapshot(store)
    facts["now"] = time.time()
    return facts


@click.command()
@click.argument("job_id", required=False)
@workdir_option
@state_option
@click.option("--once", is_flag=True, help="Print one frame (or one JSON object) and exit.")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of the terminal view.")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
def monitor(
    job_id: str | None,
    workdir: Path,
    state: str | None,
    once: bool,
    as_json: bool,
    interval: float,
) -> None:
    """Watch a running job: progress, throughput, statuses, hosts, the runner's heartbeat
    and workers (no JOB_ID: the running or most recently updated job)."""
    from rich.console import Console
    from rich.live import Live

    source = open_source(workdir, state)
    job_id = pick_job(source, job_id)
    if as_json:
        while True:
            facts = _snapshot(source, job_id)
            click.echo(orjson.dumps(facts).decode())
            if once or (not JobStatus(facts["status"]).active and not facts["runner"]["live"]):
                return
            time.sleep(interval)
    console = Console(width=None if sys.stdout.isatty() else 120)
    if once:
        console.print(render_monitor(_snapshot(source, job_id)))
        return
    with Live(console=console, auto_refresh=False) as live:
        while True:
            facts = _snapshot(source, job_id)
            live.update(render_monitor(facts), refresh=True)
            if not JobStatus(facts["status"]).active and not facts["runner"]["live"]:
                return
            time.sleep(interval)


@click.command()
@workdir_option
@state_option
@click.option(
    "--port",
    type=click.IntRange(min=0, max=65535),
    default=8765,
    show_default=True,
    envvar="SKYFILL_DASHBOARD_PORT",
    help="Port to serve on (0: any free port).",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    envvar="SKYFILL_DASHBOARD_HOST",
    help="Address to listen on (the dashboard has no login: keep it on loopback).",
)
def dashboard(workdir: Path, state: str | None, port: int, host: str) -> None:
    """Serve a live web dashboard of the jobs in --workdir (or Redis) until Ctrl-C."""
    from skyfill.monitor.dashboard import DashboardServer

    server = DashboardServer(open_source(workdir, state), port, host)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    server.start()
    click.echo(f"skyfill dashboard: {server.url} (Ctrl-C to stop)")
    sys.stdout.flush()
    try:
        stop.wait()
    finally:
        server.stop()


def _add_follow(data: dict, layout: JobLayout) -> None:
    """A following job's stream (`run --follow`), beside the job's own numbers."""
    from skyfill.firehose.follow import follow_status

    job = data.get("job", {})
    by_status = data.get("outcomes", {}).get("by_status", {})
    done = sum(n for status, n in by_status.items() if status != "pending")
    follow = follow_status(layout.root, layout.workdir, job.get("items") or 0, done)
    if follow is not None:
        data["follow"] = follow


@click.command()
@click.argument("job_id")
@workdir_option
@state_option
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["html", "json"]),
    default="html",
    show_default=True,
    help="A self-contained HTML page with plots, or the same numbers as JSON.",
)
@click.option(
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where to write it ('-': stdout). Default: <workdir>/jobs/<job_id>/report.<format>.",
)
def report(job_id: str, workdir: Path, state: str | None, fmt: str, output: Path | None) -> None:
    """Evaluate a job: throughput over time, latency per host, outcomes, retries, records
    per collection, repo sizes, cost per host, workers' share."""
    from skyfill.monitor.report import build_report, write_report

    source = open_source(workdir, state)
    layout = source.layout(job_id)
    with source.open(job_id) as store:
        data = build_report(store, layout)
    if layout is not None and state is None:
        _add_follow(data, layout)
    if output is not None and str(output) == "-":
        click.echo(write_report(data, fmt, None), nl=False)
        return
    if output is None:
        if layout is None:
            raise click.UsageError("give --output (the job's directory is not on this machine)")
        output = layout.root / f"report.{fmt}"
    write_report(data, fmt, output)
    click.echo(str(output))

"""`skyfill run` and `skyfill plan`: the backfill job's flags, from the CLI or a config file."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from skyfill.backfill.collections import parse_collections
from skyfill.backfill.config import BackfillConfig, parse_size
from skyfill.backfill.handler import BackfillHandler
from skyfill.backfill.window import resolve_since
from skyfill.cli import session
from skyfill.cli.observe import observe_options, observing
from skyfill.cli.options import config_option, progress_option, with_env_vars, workdir_option
from skyfill.cli.plan import describe_plan
from skyfill.cli.summary import summarize
from skyfill.engine.layout import JobLayout
from skyfill.errors import UsageError
from skyfill.monitor.progress import make_progress
from skyfill.ratelimit.spec import parse_host_rates
from skyfill.sinks.factory import split_password

_BACKFILL_OPTIONS = [
    click.option(
        "--dids",
        type=click.Path(dir_okay=False, path_type=Path),
        help="File with one DID per line (# comments and blank lines ignored); this, or "
        "--from-host, or both.",
    ),
    click.option(
        "--from-host",
        multiple=True,
        metavar="URL",
        help="List every repo of this PDS or relay (com.atproto.sync.listRepos) while the "
        "job runs; repeatable, and combinable with --dids (DIDs are de-duplicated).",
    ),
    click.option(
        "--collection",
        metavar="NSID",
        help="With --from-host: only repos holding this collection (listReposByCollection "
        "where the host offers it; elsewhere all repos, keeping only this collection).",
    ),
    click.option(
        "--list-limit",
        type=click.IntRange(min=1, max=1000),
        default=1000,
        show_default=True,
        help="Repos per listRepos page (with --from-host).",
    ),
    click.option(
        "--previous",
        metavar="JOB_ID",
        help="Refresh: also take every DID of this finished job (in the same workdir), and "
        "fetch only repos whose rev changed since (getLatestCommit); the others keep its rows.",
    ),
    click.option("--job-id", help="Job id (default: backfill-<date>-<random>)."),
    click.option(
        "--plc-url",
        default="https://plc.directory",
        show_default=True,
        help="PLC directory used to resolve did:plc.",
    ),
    click.option(
        "--concurrency",
        type=click.IntRange(min=1),
        default=32,
        show_default=True,
        help="Repos fetched at once.",
    ),
    click.option(
        "--batch-size",
        type=click.IntRange(min=1),
        default=100,
        show_default=True,
        help="DIDs per batch (one worker task each).",
    ),
    click.option(
        "--max-repo-bytes",
        default="1g",
        show_default=True,
        help="Largest repo CAR accepted (e.g. 1g, 300m); larger ones end `failed`.",
    ),
    click.option(
        "--attempts",
        type=click.IntRange(min=1),
        default=3,
        show_default=True,
        help="Tries per DID for 429/5xx/timeouts/network errors within a task.",
    ),
    click.option(
        "--retries",
        type=click.IntRange(min=0),
        default=3,
        show_default=True,
        help="Retry phases for DIDs that still failed with a retryable error.",
    ),
    click.option(
        "--retry-backoff",
        type=click.FloatRange(min=0),
        default=10.0,
        show_default=True,
        help="Seconds before retry phase 1; doubles per phase.",
    ),
    click.option(
        "--since",
        default="all",
        show_default=True,
        help="Keep records made since: 7d, 12h, 2025-01-01, an ISO time, or all "
        "(by the rkey's TID time, else a valid createdAt).",
    ),
    click.option(
        "--collections",
        default=None,
        metavar="NSIDS",
        help="Keep only records of these collections: comma-separated NSIDs or prefixes "
        "ending in *, e.g. app.bsky.feed.post,app.bsky.graph.* (a list in a config file). "
        "Default: all.",
    ),
    click.option(
        "--sink",
        default="parquet",
        show_default=True,
        metavar="URL",
        help="Where the dataset goes: parquet (<job>/output/), sqlite:///path.db, or "
        "postgresql://user@host:port/db (tables records and repos, refreshed per DID). "
        "A password in the URL is used, never stored: resume reads PGPASSWORD/~/.pgpass.",
    ),
    click.option(
        "--fan-in",
        type=click.IntRange(min=2),
        default=10,
        show_default=True,
        help="Files merged into one per level of the aggregation.",
    ),
    click.option(
        "--decode-processes",
        type=click.IntRange(min=0),
        default=min(2, os.cpu_count() or 1),
        show_default="min(2, cores)",
        help="Processes decoding CARs (0: in-process).",
    ),
    click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True),
        default=60.0,
        show_default=True,
        help="Seconds of silence allowed while reading a response.",
    ),
    click.option(
        "--rate-limit",
        default="3000/5m",
        show_default=True,
        help="Requests per window per host (PDS, PLC, did:web), e.g. 3000/5m, 100/1m. "
        "Tightened live from the hosts' RateLimit-* headers.",
    ),
    click.option(
        "--hosts",
        multiple=True,
        metavar="HOST=RATE",
        help="A host's own rate limit, e.g. pds.example.com=100/1m (repeatable; in a config "
        "file: a mapping `hosts: {pds.example.com: 100/1m}`).",
    ),
    click.option(
        "--host-concurrency",
        type=click.IntRange(min=1),
        default=8,
        show_default=True,
        help="Requests in flight per host at most.",
    ),
    click.option(
        "--adaptive/--no-adaptive",
        default=True,
        show_default=True,
        help="Lower a host's rate when it slows down or errors; raise it back as it recovers.",
    ),
    click.option(
        "--max-memory",
        default=None,
        help="RSS (with decoders) above which no new fetch starts, e.g. 2g; repos whose "
        "decoding would not fit are refused (failed). Default: no limit.",
    ),
    click.option(
        "--backoff-max",
        type=click.FloatRange(min=0),
        default=60.0,
        show_default=True,
        help="Longest backoff between tries of a DID (starts at 1 s, doubles, with jitter).",
    ),
    click.option(
        "--sample-interval",
        type=click.FloatRange(min=0),
        default=5.0,
        show_default=True,
        help="Seconds between points of the job's recorded timeline (for `skyfill report` "
        "and the dashboard); 0: only at the end of each run.",
    ),
    click.option(
        "--allow-private-network",
        is_flag=True,
        default=False,
        help="Allow PDS/PLC endpoints on loopback/private addresses (tests, local "
        "networks); refused otherwise.",
    ),
]


def backfill_options(f: Callable) -> Callable:
    for option in reversed(_BACKFILL_OPTIONS):
        f = option(f)
    return config_option(workdir_option(f))


def previous_root(workdir: Path, job_id: str | None) -> str | None:
    """--previous JOB_ID: the finished job's directory in <workdir>."""
    if not job_id:
        return None
    session.check_job_id(job_id)
    root = JobLayout(workdir.resolve(), job_id).root
    if not (root / "aggregation" / "manifest.json").exists():
        raise UsageError(f"--previous {job_id}: no finished job {job_id} in {workdir}")
    return str(root)


def build_handler(options: dict[str, Any], job_id: str) -> BackfillHandler:
    """The handler of the job the options describe; the sink URL's password (if any) goes
    to the handler only, never into the config that is stored."""
    sink, password = split_password(options["sink"])
    return BackfillHandler(build_config({**options, "sink": sink}, job_id), password)


def build_config(options: dict[str, Any], job_id: str) -> BackfillConfig:
    if not options.get("dids") and not options.get("from_host") and not options.get("previous"):
        raise click.UsageError(
            "Missing option '--dids' or '--from-host' (or `dids:` / `from_host:` in the "
            "config file)."
        )
    return BackfillConfig(
        dids_file=str(options["dids"]) if options.get("dids") else None,
        from_hosts=list(options.get("from_host") or []),
        collection=options.get("collection"),
        list_limit=options["list_limit"],
        previous=options.get("previous"),
        job_id=job_id,
        plc_url=options["plc_url"],
        concurrency=options["concurrency"],
        batch_size=options["batch_size"],
        max_repo_bytes=parse_size(options["max_repo_bytes"]),
        attempts=options["attempts"],
        retries=options["retries"],
        retry_backoff=options["retry_backoff"],
        since=resolve_since(options["since"]),
        fan_in=options["fan_in"],
        decode_processes=options["decode_processes"],
        read_timeout=options["timeout"],
        allow_private_network=options["allow_private_network"],
        rate_limit=options["rate_limit"],
        hosts={h: str(r) for h, r in parse_host_rates(list(options["hosts"])).items()},
        host_concurrency=options["host_concurrency"],
        adaptive=options["adaptive"],
        max_memory=parse_size(options["max_memory"]) if options["max_memory"] else None,
        backoff_max=options["backoff_max"],
        sample_interval=options["sample_interval"],
        collections=parse_collections(options["collections"]),
        sink=options["sink"],
    )


@click.command()
@backfill_options
@progress_option
@observe_options
def run(
    workdir: Path,
    progress: str,
    progress_interval: float,
    log_level: str,
    metrics_port: int,
    metrics_host: str,
    **options: Any,
) -> None:
    """Backfill every DID of a file into <workdir>/jobs/<job_id>/output/."""
    job_id = options["job_id"] or session.new_job_id()
    session.check_job_id(job_id)
    options["previous"] = previous_root(workdir, options.get("previous"))
    handler = build_handler(options, job_id)
    layout = JobLayout(workdir.resolve(), job_id)
    started = time.monotonic()
    click.echo(f"job {job_id} in {layout.root}", err=True)
    with observing(
        layout.workdir,
        job_id,
        progress=progress,
        progress_interval=progress_interval,
        log_level=log_level,
        metrics_port=metrics_port,
        metrics_host=metrics_host,
        command="run",
    ) as shown:
        job = session.submit_and_run(handler, layout, shown)
    click.echo(summarize(layout, job, started))


@click.command()
@backfill_options
def plan(workdir: Path, **options: Any) -> None:
    """Dry run: validate the input and config, show batches, tasks, hosts and estimates."""
    options["previous"] = previous_root(workdir, options.get("previous"))
    handler = build_handler(options, options["job_id"] or "plan")
    click.echo(describe_plan(handler.plan(), handler.config))


with_env_vars(run)
with_env_vars(plan)


@click.command()
@click.argument("job_id")
@click.option("--job-id", "new_id", help="Id of the refresh job (default: refresh-<date>-<hex>).")
@workdir_option
@progress_option
def refresh(job_id: str, new_id: str | None, workdir: Path, progress: str) -> None:
    """Bring a finished job up to date: a new job over its DIDs (and hosts, listed again)
    with its config, fetching only repos whose rev changed (getLatestCommit)."""
    root = previous_root(workdir, job_id)
    with session.open_store(JobLayout(workdir.resolve(), job_id)) as store:
        job = store.job()
        assert job is not None
        config = dict(job.config)
    new_id = new_id or session.new_job_id("refresh")
    session.check_job_id(new_id)
    config.update(job_id=new_id, previous=root, dids_file=None)  # its DIDs come along
    handler = BackfillHandler(BackfillConfig.from_dict(config))
    layout = JobLayout(workdir.resolve(), new_id)
    started = time.monotonic()
    click.echo(f"job {new_id} refreshes {job_id} in {layout.root}", err=True)
    job = session.submit_and_run(handler, layout, make_progress(progress))
    click.echo(summarize(layout, job, started))

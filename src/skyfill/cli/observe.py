"""Seeing a running command: `--progress-interval`, `--log-level`, `--metrics-port`.

Options of every command that runs a job (run, resume, retry, demo) and of `skyfill
firehose`; like the other flags, they can come from `SKYFILL_<FLAG>` variables and, for
`run`, the config file.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import click

from skyfill.monitor.logs import LEVELS, configure_logging
from skyfill.telemetry.logcontext import bind

if TYPE_CHECKING:
    from skyfill.engine.observer import JobObserver
    from skyfill.monitor.sources import JobSource

log = logging.getLogger("skyfill.cli")

_OPTIONS = [
    click.option(
        "--progress-interval",
        type=click.FloatRange(min=0.1),
        default=10.0,
        show_default=True,
        envvar="SKYFILL_PROGRESS_INTERVAL",
        help="Seconds between JSON progress lines (off a terminal).",
    ),
    click.option(
        "--log-level",
        type=click.Choice(LEVELS, case_sensitive=False),
        default="info",
        show_default=True,
        envvar="SKYFILL_LOG_LEVEL",
        help="Least severe log records shown (JSON lines on stderr off a terminal).",
    ),
    click.option(
        "--metrics-port",
        type=click.IntRange(min=0, max=65535),
        default=0,
        show_default=True,
        envvar="SKYFILL_METRICS_PORT",
        help="Serve Prometheus metrics on http://HOST:PORT/metrics while the job runs (0: off).",
    ),
    click.option(
        "--metrics-host",
        default="127.0.0.1",
        show_default=True,
        envvar="SKYFILL_METRICS_HOST",
        help="Address the metrics server listens on (0.0.0.0 for a remote Prometheus).",
    ),
]


def observe_options(f: Callable) -> Callable:
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


@contextlib.contextmanager
def observing(
    workdir: Path,
    job_id: str,
    *,
    progress: str,
    progress_interval: float,
    log_level: str,
    metrics_port: int,
    metrics_host: str,
    command: str,
    state_url: str | None = None,
) -> Iterator[JobObserver]:
    """Logging, the metrics server and the progress display for one run of `job_id`
    (its state in <workdir>, or in Redis at `state_url`)."""
    # imported here: the options above serve `skyfill firehose` too, which runs no job (and
    # a local run without --metrics-port loads neither the Redis client nor Prometheus's)
    from skyfill.monitor.progress import make_progress
    from skyfill.monitor.sources import WorkdirSource

    configure_logging(log_level)
    bind(job_id=job_id)
    source: JobSource = WorkdirSource(workdir)
    if state_url:
        from skyfill.monitor.redis_source import RedisSource

        source = RedisSource(state_url)
    metrics = None
    if metrics_port:
        from skyfill.monitor.metrics import MetricsServer

        metrics = MetricsServer(source, job_id, metrics_port, metrics_host)
    log.info("%s %s", command, job_id, extra={"event": "job_started", "command": command})
    try:
        yield make_progress(progress, progress_interval)
    finally:
        if metrics is not None:
            metrics.stop()
        _log_end(source, job_id)


def _log_end(source: JobSource, job_id: str) -> None:
    from skyfill.engine.model import JobStatus

    with contextlib.suppress(Exception), source.open(job_id) as store:
        job = store.job()
        if job is not None:
            level = logging.ERROR if job.status is JobStatus.FAILED else logging.INFO
            log.log(
                level,
                "job %s %s",
                job_id,
                job.status,
                extra={
                    "event": "job_finished",
                    "status": str(job.status),
                    "by_status": store.status_counts(),
                },
            )

"""The `--follow` part of `skyfill run` and `skyfill resume`: record the host's stream
while the job runs, then follow it into the job's sink (`firehose/follow.py`).

The firehose package is imported only by a job that follows: a plain backfill starts
without it (about a tenth of a second)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import click

from skyfill.backfill.config import BackfillConfig
from skyfill.cli import session
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import JobStatus
from skyfill.engine.state.base import JobRecord

if TYPE_CHECKING:
    from skyfill.firehose.follow import JobRepo


def follow_options(f: Callable) -> Callable:
    """How long a following job follows, in this run (not stored with the job)."""
    f = click.option(
        "--until-live",
        is_flag=True,
        help="With --follow: stop once the stream has caught up with the host's head "
        "(exit 0); otherwise keep following until SIGTERM/SIGINT.",
    )(f)
    return click.option(
        "--duration",
        type=click.FloatRange(min=0),
        default=None,
        metavar="SECONDS",
        help="With --follow: stop following after this many seconds.",
    )(f)


def following(config: BackfillConfig | None) -> bool:
    return config is not None and config.follow


@contextlib.contextmanager
def recording_while(layout: JobLayout, config: BackfillConfig | None) -> Iterator[None]:
    """For a following job: its stream recorded while the block runs the job's snapshots."""
    host = config.stream_host if config is not None else None
    if config is None or host is None:
        yield
        return
    from skyfill.firehose.follow import begin, recording

    target = begin(layout.root, layout.job_id, host, config.allow_private_network)
    with recording(layout.root, target, config.allow_private_network):
        yield


def job_repos(layout: JobLayout) -> Callable[[], Iterable[JobRepo]]:
    """The job's outcomes, read from its state when the stream starts from them."""

    from skyfill.firehose.follow import JobRepo

    def read() -> Iterator[JobRepo]:
        with session.open_store(layout) as store:
            for item in store.iter_items():
                yield JobRepo(item.key, item.status, item.data.get("rev"), item.error)

    return read


def follow_after(
    layout: JobLayout,
    job: JobRecord,
    config: BackfillConfig,
    *,
    until_live: bool,
    duration: float | None,
    progress: str,
    sink_password: str | None = None,
) -> None:
    """The stream after a completed job; prints its summary line."""
    if job.status is not JobStatus.COMPLETED:
        return
    from skyfill.firehose.follow import follow_job
    from skyfill.firehose.progress import summary_line

    facts: dict[str, Any] = follow_job(
        layout.root,
        layout.workdir,
        config,
        job_repos(layout),
        until_live=until_live,
        duration=duration,
        progress=progress,
        sink_password=sink_password,
    )
    state = "live" if facts.get("live") else "stopped"
    click.echo(f"follow {facts['stream_id']} {state}: {summary_line(facts)}")

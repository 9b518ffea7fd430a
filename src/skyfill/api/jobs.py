"""`skyfill.backfill(...)`: a backfill job run from Python (a notebook, a script), with the
config (`BackfillConfig`), state store and runner of `skyfill run`.

The job runs on an event loop of its own in a thread of its own, so a caller that already
runs a loop (Jupyter) is no obstacle; Ctrl-C (KeyboardInterrupt) stops it as SIGINT stops
`skyfill run`: the job is left resumable and `Interrupted` is raised. Calling again with
the same `job_id` resumes an unfinished job, and returns a completed one's summary without
fetching anything, so re-running a notebook cell is safe.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import sys
import threading
from collections.abc import Iterable
from dataclasses import fields
from datetime import datetime
from pathlib import Path
from typing import Any

from skyfill.api.summary import JobSummary, summarize_job
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.handler import BackfillHandler
from skyfill.cli import session
from skyfill.cli.backfill import previous_root
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import JobStatus
from skyfill.engine.observer import JobObserver, NullObserver
from skyfill.engine.runner import JobRunner
from skyfill.engine.state.base import JobRecord
from skyfill.errors import UsageError
from skyfill.flags import Flag, flag_fields
from skyfill.sinks.factory import split_password

DIDS_FILE = "dids.txt"
"""Where DIDs given as a list are written: `<workdir>/jobs/<job_id>/dids.txt`."""
PROGRESS = ("auto", "rich", "log", "none")


def backfill(
    dids: str | os.PathLike[str] | Iterable[str] | None = None,
    *,
    sink: str | None = None,
    workdir: str | os.PathLike[str] = "skyfill-work",
    job_id: str | None = None,
    progress: str = "auto",
    **options: Any,
) -> JobSummary:
    """Run a backfill job to its end and return its summary.

    `dids`: a file of DIDs (one per line, as `--dids`) or the DIDs themselves (a list,
    written to `<workdir>/jobs/<job_id>/dids.txt`); or none, with `from_hosts=[URL, ...]`
    or `from_relays=[...]`. `sink`: `parquet` (the default: the job's `output/`),
    `sqlite:///path.db` or `postgresql://...`. Any other field of `BackfillConfig` is a
    keyword, by its field name (`plc_url`, `concurrency`, `since="7d"`, `collections=[...]`,
    `max_repo_bytes="300m"` or a number, `hosts={"pds.example": "100/1m"}`, ...), checked
    as `skyfill run` checks its flags. Following a stream (`follow`) is `skyfill run`'s.

    `job_id` (default: `backfill-<date>-<hex>`): an existing job of that id in `workdir`
    is resumed if unfinished, or only summarized if completed. Options left out are the
    job's own; those given must agree with it (UsageError otherwise; a relative `since`
    is the window the job pinned). `progress`: `auto` (a live view on a terminal, nothing
    elsewhere), `rich`, `log` (JSON lines on stderr) or `none`.

    Raises UsageError (a bad option or input), skyfill.sinks.exceptions.SinkError (the sink
    cannot be written), JobError (a task or the aggregation failed) and Interrupted (the
    job was stopped: Ctrl-C, `skyfill pause` or `cancel`); the job is resumable after the
    last two. In a script, call it under `if __name__ == "__main__":`: large repos are
    decoded in spawned processes, which import the script's main module.
    """
    workdir = Path(workdir).resolve()
    job_id = job_id or session.new_job_id()
    session.check_job_id(job_id)
    layout = JobLayout(workdir, job_id)
    observer = _observer(progress)
    listed = _did_list(dids)
    values = config_values(options)
    if dids is not None:
        if "dids_file" in values:
            raise UsageError("give the DIDs once: dids= or dids_file=, not both")
        named = _path(dids) if isinstance(dids, str | os.PathLike) else layout.root / DIDS_FILE
        values["dids_file"] = str(named)
    if values.get("previous"):
        values["previous"] = previous_root(workdir, values["previous"])
    url, password = split_password(sink or "parquet")
    if sink is not None:
        values["sink"] = url
    if layout.state_db.exists():
        if _relative(options.get("since")):
            values.pop("since")  # the job pinned its own window when it was planned
        return _existing(layout, values, listed, observer)
    return _new(layout, values, listed, password, observer)


def _new(
    layout: JobLayout,
    values: dict[str, Any],
    dids: list[str] | None,
    password: str | None,
    observer: JobObserver,
) -> JobSummary:
    """Plan the job, submit it and run it, as `skyfill run` does."""
    config = make_config({"sink": "parquet", **values, "job_id": layout.job_id})
    if config.follow or config.labels:
        raise UsageError("follow and labels: not from Python; use `skyfill run --follow`")
    if dids is not None:
        _write_dids(layout.root / DIDS_FILE, dids)
    handler = BackfillHandler(config, password)
    session.submit_and_run(handler, layout, observer, run_job=run_in_thread)
    return _summary(layout)


def _relative(since: object) -> bool:
    """Whether `since` is a window relative to now (`7d`, `12h`), pinned when planned."""
    return isinstance(since, str) and bool(re.fullmatch(r"\s*\d+\s*[a-zA-Z]+\s*", since))


def config_values(options: dict[str, Any]) -> dict[str, Any]:
    """BackfillConfig's fields from keywords named as the fields; a flag's text (`"7d"`,
    `"300m"`, `"a,b"`) is parsed as on the command line, other values are taken as they are."""
    flags = {item.name: spec for item, spec in flag_fields(BackfillConfig)}
    known = {item.name for item in fields(BackfillConfig)} - {"job_id", "sink"}
    unknown = sorted(set(options) - known)
    if unknown:
        raise UsageError(
            f"unknown option(s) {', '.join(unknown)}: the options are BackfillConfig's "
            f"fields ({', '.join(sorted(known))})"
        )
    return {
        name: _coerce(flags[name], value) if name in flags else value
        for name, value in options.items()
        if value is not None
    }


def _coerce(spec: Flag, value: Any) -> Any:
    if isinstance(value, datetime):
        value = value.isoformat()
    if spec.multiple and isinstance(value, str):
        value = [value]
    elif spec.multiple and isinstance(value, tuple | set | frozenset):
        value = list(value)
    if spec.parse is None:
        return value
    is_text = isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(v, str) for v in value)
    )
    return spec.parse(value) if is_text else value


def make_config(values: dict[str, Any]) -> BackfillConfig:
    try:
        return BackfillConfig(**values)
    except TypeError as exc:  # a value of the wrong type, caught where it is compared
        raise UsageError(f"backfill options: {exc}") from None


def _did_list(dids: object) -> list[str] | None:
    """The DIDs given as a list (None: a path, or nothing)."""
    if dids is None or isinstance(dids, str | os.PathLike):
        return None
    if isinstance(dids, bytes) or not isinstance(dids, Iterable):
        raise UsageError(f"dids: a path or a list of DIDs, not {type(dids).__name__}")
    listed = [str(did).strip() for did in dids]
    if not listed:
        raise UsageError("dids: the list is empty")
    return listed


def _path(dids: str | os.PathLike[str]) -> Path:
    path = Path(os.fspath(dids))
    if not path.is_file():
        raise UsageError(f"dids: no file {path}")
    return path.resolve()


def _write_dids(path: Path, dids: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{did}\n" for did in dids))


def _existing(
    layout: JobLayout, values: dict[str, Any], dids: list[str] | None, observer: JobObserver
) -> JobSummary:
    """A job of this id exists: its summary if completed, else resumed, once the call is
    known to describe that job."""
    with session.open_store(layout) as store:
        session.ensure_not_running(store)
        job = store.job()
    if job is not None:  # (None: killed while planning; resuming plans it again)
        _check_same_job(layout, job, values, dids)
        if job.status is JobStatus.COMPLETED:
            return _summary(layout)
        if job.config.get("follow"):
            raise UsageError(f"job {job.job_id} follows a stream: `skyfill resume {job.job_id}`")
    session.resume(layout, observer, run_job=run_in_thread)
    return _summary(layout)


def _check_same_job(
    layout: JobLayout, job: JobRecord, values: dict[str, Any], dids: list[str] | None
) -> None:
    """UsageError unless every option given is the job's (once normalized as the config
    normalizes it: the sink URL, collection patterns, ...)."""
    stored = job.config
    given = {name: value for name, value in values.items() if name != "dids_file"}
    merged = BackfillConfig.from_dict({**stored, **given}).to_dict()
    differ = sorted(name for name in merged if merged[name] != stored.get(name))
    kept = stored.get("dids_file")
    if dids is not None:
        if not kept or not Path(kept).is_file() or Path(kept).read_text().split() != dids:
            differ.insert(0, "dids")
    elif "dids_file" in values and (not kept or Path(kept).resolve() != Path(values["dids_file"])):
        differ.insert(0, "dids")
    if differ:
        raise UsageError(
            f"job {job.job_id} exists in {layout.workdir} with other options "
            f"({', '.join(differ)}): pass the same ones to resume it, or another job_id"
        )


def _summary(layout: JobLayout) -> JobSummary:
    with session.open_store(layout) as store:
        job = store.job()
        assert job is not None and job.status is JobStatus.COMPLETED
        return summarize_job(layout, job, store)


def _observer(progress: str) -> JobObserver:
    if progress not in PROGRESS:
        raise UsageError(f"progress {progress!r}: choose one of {', '.join(PROGRESS)}")
    from skyfill.monitor.progress import make_progress

    if progress == "auto":
        return make_progress("rich") if sys.stderr.isatty() else NullObserver()
    if progress == "log":
        from skyfill.monitor.logs import configure_logging

        configure_logging("info")
    return make_progress(progress)


def run_in_thread(runner: JobRunner) -> JobRecord:
    """Run the job on an event loop of its own in a thread of its own, and wait for it;
    a KeyboardInterrupt meanwhile asks the job to stop (and is not raised further: the
    job's stop is, as `Interrupted`). Raises what the run raised."""
    ended: dict[str, Any] = {}
    started, finished = threading.Event(), threading.Event()
    loop: list[asyncio.AbstractEventLoop] = []

    async def main() -> JobRecord:
        loop.append(asyncio.get_running_loop())
        started.set()
        return await runner.run()

    def target() -> None:
        try:
            ended["job"] = asyncio.run(main())
        except BaseException as exc:  # handed to the caller's thread
            ended["error"] = exc
        finally:
            started.set()
            finished.set()

    thread = threading.Thread(target=target, name=f"skyfill-{runner.layout.job_id}")
    thread.start()
    # Waited on an Event, not with Thread.join: a KeyboardInterrupt inside join() can leave
    # the thread marked as ended while it runs (CPython 3.11, bpo-45274's fix).
    try:
        while not finished.wait(0.2):
            pass
    except KeyboardInterrupt:
        started.wait()
        with contextlib.suppress(IndexError, RuntimeError):  # no loop, or closed: it ended
            loop[0].call_soon_threadsafe(runner.stop_requested.set)
        while not finished.wait(0.2):
            pass
    thread.join()
    if "error" in ended:
        raise ended["error"]
    job: JobRecord = ended["job"]
    if job.status is not JobStatus.COMPLETED:
        raise session.Interrupted(job)
    return job

"""`skyfill run --follow`: a backfill job and its host's event stream, together.

1. Before the first snapshot is fetched, the host's head seq is read and kept in the job's
   `follow/follow.json` (`begin`): the stream starts right after it.
2. While the job runs, a `Recorder` (a thread with its own event loop) writes every event
   from there on to the job's `follow/spill/` (`spill.py`): nothing is held in memory, and
   a job killed and resumed continues the recording after its last whole event.
3. When the job is done (its snapshots are in the sink), `follow_job` runs the stream
   `follow-<job id>` into the same sink (SQL: the same tables; Parquet: an event log in
   the job's `follow/log/`, compacted over the job's output by `skyfill firehose
   compact`). Its state starts from the job's outcomes: each fetched repo at the rev of
   its snapshot, so that every event at or below it is dropped; a repo whose fetch
   failed is desynchronized, i.e. fetched again by the stream. It reads the recording
   first and then the host, from the last recorded seq, and keeps following.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from skyfill.atproto.stream.client import (
    StreamClosed,
    StreamUnavailable,
    resubscribing,
    subscribe,
)
from skyfill.atproto.stream.frames import peek
from skyfill.backfill.config import BackfillConfig
from skyfill.errors import Outcome, UsageError
from skyfill.firehose.book import ACTIVE, DESYNCHRONIZED
from skyfill.firehose.config import FirehoseConfig
from skyfill.firehose.run import StreamHooks, run_stream
from skyfill.firehose.spill import SpillWriter, drop_spill_through, read_spill
from skyfill.firehose.state import RepoFacts, StreamState
from skyfill.firehose.status import render_stream_status, stream_status
from skyfill.firehose.window import find_head, probe_with
from skyfill.net.http import HttpSettings, make_session

log = logging.getLogger(__name__)

STOP_SECONDS = 15.0
FAILED = frozenset({Outcome.FAILED.value, Outcome.INVALID_REPO.value})
"""Outcomes whose snapshot is missing or untrusted: the stream fetches those repos again."""


@dataclass(frozen=True, slots=True)
class FollowTarget:
    """What a following job follows, fixed when it begins."""

    host: str
    start: int
    """The host's head when the job began: events after it are recorded and applied."""
    stream_id: str


@dataclass(frozen=True, slots=True)
class JobRepo:
    """One DID's outcome in the job, as the stream starts from it."""

    did: str
    status: str
    rev: str | None
    error: str | None = None


def follow_root(job_root: Path) -> Path:
    return job_root / "follow"


def spill_root(job_root: Path) -> Path:
    return follow_root(job_root) / "spill"


def load_target(job_root: Path) -> FollowTarget | None:
    path = follow_root(job_root) / "follow.json"
    try:
        return FollowTarget(**orjson.loads(path.read_bytes()))
    except FileNotFoundError:
        return None
    except (OSError, orjson.JSONDecodeError, TypeError) as exc:
        raise UsageError(f"{path} is unreadable ({exc}); the job cannot follow") from None


def begin(job_root: Path, job_id: str, host: str, allow_private_network: bool) -> FollowTarget:
    """The job's follow target: read back, or made now from the host's current head."""
    target = load_target(job_root)
    if target is not None:
        return target
    head = asyncio.run(_head(host, allow_private_network))
    target = FollowTarget(host=host, start=head, stream_id=f"follow-{job_id}")
    root = follow_root(job_root)
    root.mkdir(parents=True, exist_ok=True)
    partial = root / "follow.json.partial"
    partial.write_bytes(orjson.dumps(asdict(target), option=orjson.OPT_INDENT_2))
    partial.replace(root / "follow.json")
    log.info("following %s from seq %d (its head now)", host, head, extra={"event": "follow_begin"})
    return target


async def _head(host: str, allow_private_network: bool) -> int:
    async with _stream_session(allow_private_network) as session:
        probe = probe_with(
            subscribe, host, session=session, allow_private_network=allow_private_network
        )
        try:
            return await find_head(probe)
        except (StreamClosed, StreamUnavailable) as exc:
            raise UsageError(f"--follow: cannot read the stream of {host}: {exc}") from None


@contextlib.asynccontextmanager
async def _stream_session(allow_private_network: bool) -> AsyncIterator[aiohttp.ClientSession]:
    session = make_session(
        HttpSettings(
            connect_timeout=10.0,
            read_timeout=None,
            total_timeout=None,
            allow_private_network=allow_private_network,
        )
    )
    try:
        yield session
    finally:
        await session.close()


# -- recording while the job runs -------------------------------------------------------


class Recorder:
    """Writes the host's events after `after` (or after the recording's last seq) to the
    spill, reconnecting with backoff, until `stop`."""

    def __init__(self, host: str, after: int, root: Path, allow_private_network: bool) -> None:
        self._host = host
        self._after = after
        self._root = root
        self._allow_private = allow_private_network
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._main, name="skyfill-follow-recorder")
        self.events = 0
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()
        self._started.wait(STOP_SECONDS)

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # its loop already ended
                loop.call_soon_threadsafe(task.cancel)
        self._thread.join(STOP_SECONDS)

    def _main(self) -> None:
        try:
            asyncio.run(self._run())
        except BaseException as exc:  # said by the job's follow phase, not lost
            self.error = exc
            log.error("the stream recorder stopped: %s", exc, extra={"event": "follow_recorder"})
        finally:
            self._started.set()

    async def _run(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = asyncio.current_task()
        self._started.set()
        writer = SpillWriter(self._root)
        try:
            async with _stream_session(self._allow_private) as session:
                with contextlib.suppress(asyncio.CancelledError):
                    await self._record(session, writer)
        finally:
            writer.close()
            self.events = writer.events

    async def _record(self, session: aiohttp.ClientSession, writer: SpillWriter) -> None:
        def cursor() -> int:
            return writer.last_seq if writer.last_seq is not None else self._after

        def dropped(exc: StreamClosed | StreamUnavailable) -> None:
            writer.sync()
            log.info(
                "recording %s: %s; reconnecting", self._host, exc, extra={"event": "reconnect"}
            )

        async for message in resubscribing(
            subscribe,
            self._host,
            cursor,
            dropped=dropped,
            session=session,
            allow_private_network=self._allow_private,
        ):
            writer.append(message, peek(message)[1])


@contextlib.contextmanager
def recording(job_root: Path, target: FollowTarget, allow_private_network: bool) -> Iterator[None]:
    """The recorder runs while the block does (the job's snapshots), and stops after it."""
    recorder = Recorder(target.host, target.start, spill_root(job_root), allow_private_network)
    recorder.start()
    try:
        yield
    finally:
        recorder.stop()


# -- following after the job ------------------------------------------------------------


def spill_first(root: Path) -> Callable[..., AsyncIterator[bytes]]:
    """`subscribe` that yields the recorded events after the cursor, then the host's."""

    async def open_stream(url: str, cursor: int | None, **client: Any) -> AsyncIterator[bytes]:
        last = cursor
        for count, (seq, message) in enumerate(read_spill(root, cursor)):
            if seq is not None:
                last = seq
            yield message
            if count % 256 == 255:
                await asyncio.sleep(0)  # let the rest of the consumer run
        async for message in subscribe(url, last, **client):
            yield message

    return open_stream


def repo_facts(repo: JobRepo) -> RepoFacts:
    if repo.status in FAILED:
        reason = f"backfill: {repo.status}" + (f" ({repo.error})" if repo.error else "")
        return RepoFacts(rev=None, status=repo.status, phase=DESYNCHRONIZED, reason=reason)
    rev = repo.rev if repo.status == Outcome.OK.value else None
    return RepoFacts(rev=rev, status=repo.status, phase=ACTIVE)


def seeding(
    job_root: Path, target: FollowTarget, repos: Callable[[], Iterable[JobRepo]]
) -> Callable[[StreamState, str], None]:
    """The stream's state before its first run: the job's repos at their snapshots' revs,
    the cursor at the job's start (one transaction). Later runs keep their own state and
    drop the recorded files they have applied."""

    def prepare(state: StreamState, source: str) -> None:
        saved = state.cursor(source)
        if saved is not None:
            drop_spill_through(spill_root(job_root), saved[0])
            return
        facts = ((repo.did, repo_facts(repo)) for repo in repos())
        state.save(source, target.start, None, facts)

    return prepare


def stream_config(
    config: BackfillConfig,
    target: FollowTarget,
    job_root: Path,
    *,
    until_live: bool,
    duration: float | None,
) -> FirehoseConfig:
    """The job's stream: its sink, identity, verification and filters."""
    sink = config.sink
    if "://" not in sink:  # the job writes Parquet: the stream an event log beside it
        sink = str(follow_root(job_root) / "log")
    return FirehoseConfig(
        from_host=target.host,
        sink=sink,
        stream_id=target.stream_id,
        until_live=until_live,
        duration=duration,
        plc_url=config.plc_url,
        verify_signatures=config.verify_signatures,
        collections=config.collections,
        dids_file=config.dids_file if not config.from_hosts else None,
        allow_private_network=config.allow_private_network,
        max_memory=config.max_memory,
        labels=list(config.labels),
    )


def follow_job(
    job_root: Path,
    workdir: Path,
    config: BackfillConfig,
    repos: Callable[[], Iterable[JobRepo]],
    *,
    until_live: bool,
    duration: float | None,
    progress: str,
    sink_password: str | None,
) -> dict[str, Any]:
    """Apply what was recorded, then follow the host (until live, out of time, or stopped
    by SIGTERM/SIGINT): the stream's summary facts."""
    target = load_target(job_root)
    if target is None:
        raise UsageError(f"job in {job_root} does not follow a stream (no follow/follow.json)")
    hooks = StreamHooks(
        subscribe=spill_first(spill_root(job_root)),
        prepare=seeding(job_root, target, repos),
        sink_password=sink_password,
    )
    stream = stream_config(config, target, job_root, until_live=until_live, duration=duration)
    return run_stream(stream, workdir, progress=progress, hooks=hooks)


# -- status -------------------------------------------------------------------------------


def follow_status(job_root: Path, workdir: Path, items: int, done: int) -> dict[str, Any] | None:
    """What `skyfill status JOB` says of a following job's stream (None: it follows none).
    Repos are `pending` (no snapshot yet), `backfilling` (a snapshot, its events recorded,
    not applied yet), then as the stream has them: `active` or `desynchronized` (held for
    a re-fetch)."""
    target = load_target(job_root)
    if target is None:
        return None
    recorded = sum(path.stat().st_size for path in spill_root(job_root).glob("spill-*.bin"))
    facts: dict[str, Any] = {
        "host": target.host,
        "start": target.start,
        "stream_id": target.stream_id,
        "recorded_bytes": recorded,
        "phase": "recording",
        "repos": {"pending": items - done, "backfilling": done},
        "stream": None,
    }
    if (workdir / "streams" / target.stream_id / "state.sqlite").exists():
        stream = stream_status(workdir, target.stream_id)
        counts = stream["repos"]
        facts.update(phase="following", stream=stream)
        facts["repos"] = {
            "pending": items - done,
            "active": counts.get("phase:active", 0),
            "desynchronized": counts.get("phase:desynchronized", 0),
        }
    return facts


def render_follow_status(facts: dict[str, Any]) -> str:
    repos = ", ".join(f"{name} {count}" for name, count in facts["repos"].items())
    lines = [
        f"  follows {facts['host']} from seq {facts['start']}: {facts['phase']} "
        f"({facts['recorded_bytes'] / 2**20:.1f} MiB recorded)",
        f"  repos: {repos}",
    ]
    if facts["stream"] is not None:
        lines.append(render_stream_status(facts["stream"]))
    return "\n".join(lines)

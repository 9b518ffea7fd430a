"""One `skyfill labels` run: the stream's directory, its state and sink, a follower per
labeler, signals, progress and the summary; and `following`, the same followers beside
another stream (`skyfill firehose --labels URL`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.xrpc import XrpcClient
from skyfill.errors import UsageError
from skyfill.labels.checker import LabelChecker
from skyfill.labels.config import LabelsConfig
from skyfill.labels.follower import LabelFollower
from skyfill.labels.progress import showing
from skyfill.labels.state import LabelState
from skyfill.labels.stats import LabelCounters, facts, summary_line
from skyfill.net.aiohttp_transport import AiohttpTransport
from skyfill.net.http import HttpSettings, make_session
from skyfill.ratelimit.local import side_limiter
from skyfill.sinks.factory import open_label_sink
from skyfill.sinks.labels import LabelSink
from skyfill.storage.lockfile import exclusive

log = logging.getLogger(__name__)


class StreamBusy(UsageError):
    """Another process is following these labelers into this stream's state."""


@dataclass(slots=True)
class LabelsDir:
    root: Path

    @classmethod
    def of(cls, workdir: Path, stream_id: str) -> LabelsDir:
        return cls(workdir / "streams" / stream_id)

    @property
    def state(self) -> Path:
        return self.root / "labels.sqlite"

    @property
    def manifest(self) -> Path:
        return self.root / "labels.json"

    @property
    def lock(self) -> Path:
        return self.root / "labels.lock"


class LabelStreams:
    """The followers of one run: started together; the first to fail stops the others
    (each saves what it applied) and its error is raised."""

    def __init__(self, followers: list[LabelFollower], starts: list[int], **extra: Any) -> None:
        self.followers = followers
        self._starts = starts
        self._extra = extra

    def facts(self) -> dict[str, Any]:
        return facts((f.counters for f in self.followers), **self._extra)

    def stop(self) -> None:
        for follower in self.followers:
            follower.stop()

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(f.run(start), name=f"labels {f.url}")
            for f, start in zip(self.followers, self._starts, strict=True)
        ]
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            self.stop()
            await asyncio.wait(tasks)
        for task in tasks:
            error = None if task.cancelled() else task.exception()
            if error is not None:
                raise error


def run_labels(
    config: LabelsConfig, workdir: Path, *, progress: str = "auto", progress_interval: float = 10.0
) -> dict[str, Any]:
    """Follow the labelers until stopped (or live); returns the summary's facts."""
    where = LabelsDir.of(workdir, config.stream_id)
    busy = StreamBusy(f"label stream {config.stream_id} is already running (lock {where.lock})")
    with exclusive(where.lock, busy):
        return asyncio.run(_run(config, where, progress, progress_interval))


async def _run(config: LabelsConfig, where: LabelsDir, progress: str, interval: float) -> dict:
    state = LabelState(where.state)
    sink = open_label_sink(config.sink)
    try:
        await asyncio.to_thread(sink.check)
        _write_manifest(where, config, sink.target)
        async with _http(config.allow_private_network) as (session, client):
            resolver = IdentityResolver(client, config.plc_url)
            streams = await open_streams(
                config, sink=sink, state=state, session=session, resolver=resolver
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, streams.stop)
            try:
                async with showing(streams.facts, progress, interval):
                    await streams.run()
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
                state.put_meta("stats", {**streams.facts(), "updated_at": time.time()})
        final = streams.facts()
        log.info(summary_line(final), extra={"event": "labels_done", **final})
        return final
    finally:
        sink.close()
        state.close()


async def open_streams(
    config: LabelsConfig,
    *,
    sink: LabelSink,
    state: LabelState,
    session: aiohttp.ClientSession,
    resolver: IdentityResolver,
) -> LabelStreams:
    """A follower per labeler of `config`, each from the cursor the sink holds for it."""
    followers, starts = [], []
    streams = LabelStreams(followers, starts, stream_id=config.stream_id, sink=sink.target)

    def stats() -> dict[str, Any]:
        return {**streams.facts(), "updated_at": time.time()}

    for url in config.from_labelers:
        starts.append(await _start(url, sink, state, config.cursor))
        checker = LabelChecker(
            resolver, url, state.did(url), pinned=lambda did, url=url: state.pin(url, did)
        )
        followers.append(
            LabelFollower(
                url=url,
                sink=sink,
                state=state,
                checker=checker,
                counters=LabelCounters(url, did=checker.did),
                session=session,
                allow_private_network=config.allow_private_network,
                until_live=config.until_live,
                batch_size=config.batch_size,
                flush_seconds=config.flush_seconds,
                stats=stats,
            )
        )
    return streams


@contextlib.asynccontextmanager
async def following(
    config: LabelsConfig,
    root: Path,
    *,
    session: aiohttp.ClientSession,
    client: XrpcClient,
) -> AsyncIterator[LabelStreams]:
    """The labelers of `config` followed while the block runs (beside another stream),
    their state in `root`. At the block's end they are stopped (with `until_live`: once
    each is live), and a failure of one is raised."""
    state = LabelState(root / "labels.sqlite")
    sink = open_label_sink(config.sink)
    try:
        await asyncio.to_thread(sink.check)
        resolver = IdentityResolver(client, config.plc_url)
        streams = await open_streams(
            config, sink=sink, state=state, session=session, resolver=resolver
        )
        task = asyncio.create_task(streams.run(), name="labels")
        task.add_done_callback(_said)
        try:
            yield streams
        except BaseException:
            streams.stop()
            await asyncio.wait([task])
            raise
        if not config.until_live:
            streams.stop()
        await task  # a follower's failure is raised here
        final = streams.facts()
        log.info(summary_line(final), extra={"event": "labels_done", **final})
    finally:
        sink.close()
        state.close()


def _said(task: asyncio.Task) -> None:
    """A label stream that failed beside another stream is said at once (and raised when
    that stream ends)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("labels stopped: %s", task.exception(), extra={"event": "labels_stopped"})


async def _start(url: str, sink: LabelSink, state: LabelState, cursor: int | None) -> int:
    """The sink's cursor for `url` (it holds the rows it covers), else `cursor`, else 0."""
    saved = await asyncio.to_thread(sink.cursor, url)
    if saved is not None:
        log.info("resuming %s after seq %d", url, saved, extra={"event": "resume"})
        return saved
    known = state.cursors().get(url)
    if known is not None:
        log.warning(
            "the sink holds no cursor for %s (this stream's state says seq %d, for another "
            "sink?): starting after seq %d",
            url,
            known,
            cursor or 0,
            extra={"event": "cursor_not_in_sink"},
        )
    return cursor or 0


@contextlib.asynccontextmanager
async def _http(allow_private: bool) -> AsyncIterator[tuple[aiohttp.ClientSession, XrpcClient]]:
    """A session for the streams (no overall timeout) and an XRPC client for DID documents."""
    stream_session = make_session(
        HttpSettings(
            connect_timeout=10.0,
            read_timeout=None,
            total_timeout=None,
            allow_private_network=allow_private,
        )
    )
    session = make_session(HttpSettings(allow_private_network=allow_private))
    limiter = side_limiter(4)
    try:
        yield (
            stream_session,
            XrpcClient(AiohttpTransport(session, allow_private), allow_private, limiter),
        )
    finally:
        await stream_session.close()
        await session.close()


def _write_manifest(where: LabelsDir, config: LabelsConfig, target: str) -> None:
    data = {
        "kind": "labels",
        "stream_id": config.stream_id,
        "labelers": config.from_labelers,
        "sink": target,
        "config": {**config.to_dict(), "sink": target},
        "started_at": time.time(),
    }
    where.root.mkdir(parents=True, exist_ok=True)
    where.manifest.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))

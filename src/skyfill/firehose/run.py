"""One `skyfill firehose` run: the stream's directory, its state and sink, where it starts,
the consumer, signals, progress and the summary."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from yarl import URL

from skyfill import gcpolicy
from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.stream.client import subscribe
from skyfill.atproto.xrpc import XrpcClient
from skyfill.backfill.collections import CollectionFilter, collection_filter
from skyfill.backfill.input import read_did_file
from skyfill.errors import UsageError
from skyfill.firehose.apply import Applier
from skyfill.firehose.book import RepoBook
from skyfill.firehose.config import FirehoseConfig
from skyfill.firehose.consumer import Consumer, Feed
from skyfill.firehose.decoding import Decoder, InlineDecoder
from skyfill.firehose.progress import serve_metrics, showing, summary_line
from skyfill.firehose.resync import Resyncer
from skyfill.firehose.state import StreamState, StreamStateStore
from skyfill.firehose.stats import StreamCounters
from skyfill.firehose.window import Opener, event_time, find_head, first_at_or_after, probe_with
from skyfill.firehose.workers import ProcessDecoder, WorkerSettings
from skyfill.labels.config import LabelsConfig
from skyfill.labels.run import following
from skyfill.net.aiohttp_transport import AiohttpTransport
from skyfill.net.http import HttpSettings, make_session
from skyfill.ratelimit.local import side_limiter
from skyfill.ratelimit.memory_gate import MemoryGate
from skyfill.sinks.changes import StreamSink
from skyfill.sinks.factory import open_stream_sink
from skyfill.storage.lockfile import exclusive

log = logging.getLogger(__name__)

HELD_BYTES_DEFAULT = 256 << 20
"""Events held for desynchronized repos, at most (without --max-memory: a quarter of it)."""


class StreamBusy(UsageError):
    """Another process is running this stream."""


@dataclass(slots=True)
class StreamDir:
    root: Path

    @classmethod
    def of(cls, workdir: Path, stream_id: str) -> StreamDir:
        return cls(workdir / "streams" / stream_id)

    @property
    def state(self) -> Path:
        return self.root / "state.sqlite"

    @property
    def manifest(self) -> Path:
        return self.root / "stream.json"

    @property
    def lock(self) -> Path:
        return self.root / "lock"

    def shard(self, index: int) -> StreamDir:
        """A split stream's shard K (`--shards`): its own state and lock."""
        return StreamDir(self.root / f"shard-{index}")


def source_key(url: str) -> str:
    """The cursor's key for a host: `host:port`."""
    parsed = URL(url)
    return f"{parsed.host}:{parsed.port}"


def run_stream(
    config: FirehoseConfig,
    workdir: Path,
    *,
    progress: str = "auto",
    progress_interval: float = 10.0,
    metrics_port: int = 0,
    hooks: StreamHooks | None = None,
) -> dict[str, Any]:
    """Run the stream until stopped; returns the summary's facts."""
    where = StreamDir.of(workdir, config.stream_id)
    busy = StreamBusy(f"stream {config.stream_id} is already running (lock {where.lock})")
    from skyfill.firehose.shards import fork_shards, release, run_sharded, shard_count

    shards = 1 if hooks is not None else shard_count(config, where)
    config = replace(config, shards=shards)
    if shards > 1:
        forked = fork_shards(config, where)  # before the lock and the loop
        try:
            with exclusive(where.lock, busy):
                return asyncio.run(
                    run_sharded(config, where, forked, progress, progress_interval, metrics_port)
                )
        finally:
            release(forked)
    with exclusive(where.lock, busy):
        return asyncio.run(
            _run(config, where, progress, progress_interval, metrics_port, hooks or StreamHooks())
        )


@dataclass(frozen=True, slots=True)
class StreamHooks:
    """How a stream that is part of something larger (`run --follow`) differs from a
    plain `skyfill firehose`: where its messages come from, and what its state holds
    before it starts."""

    subscribe: Callable[..., AsyncIterator[bytes]] = subscribe
    """Opens the stream at a cursor (`client.subscribe`'s signature)."""
    prepare: Callable[[StreamState, str], None] | None = None
    """Called with the state and the source's key before the start is chosen."""
    sink_password: str | None = None


async def _run(
    config: FirehoseConfig,
    where: StreamDir,
    progress: str,
    interval: float,
    metrics_port: int,
    hooks: StreamHooks,
) -> dict[str, Any]:
    gcpolicy.tune()
    state = StreamState(where.state)
    sink = open_stream_sink(
        config.sink, stream_id=config.stream_id, password=hooks.sink_password, state_dir=where.root
    )
    try:
        await asyncio.to_thread(sink.check)
        write_manifest(where, config, sink.target)
        source = source_key(config.from_host)
        if hooks.prepare is not None:
            hooks.prepare(state, source)
        parts = ConsumerParts.of(state, config.max_memory, children=True)
        async with stream_clients(config) as (stream_session, client):
            probe = stream_probe(config, stream_session)
            start = await _start(config, state, sink, source, probe)
            facts = parts.facts(stream_id=config.stream_id, source=source)
            consumer = make_consumer(
                config,
                source=source,
                session=stream_session,
                client=client,
                sink=sink,
                state=state,
                parts=parts,
                probe=probe,
                stats=facts,
                subscribe=hooks.subscribe,
            )
            if metrics_port:
                serve_metrics(facts, config.stream_id, metrics_port)
            with stopped_by_signals(consumer.stop):
                async with (
                    showing(facts, progress, interval),
                    following_labels(config, where, stream_session, client),
                ):
                    await consumer.run(start)
            final = facts()
            state.put_stats(final)
            log.info(summary_line(final), extra={"event": "firehose_done", **final})
            return final
    finally:
        sink.close()
        state.close()


@dataclass(frozen=True, slots=True)
class ConsumerParts:
    """What a consumer counts and keeps, and what its facts are read from."""

    counters: StreamCounters
    memory: MemoryGate
    book: RepoBook

    @classmethod
    def of(cls, state: StreamState, max_memory: int | None, *, children: bool) -> ConsumerParts:
        """Fresh counters, a memory gate (`children`: count the process's children, decode
        workers) and the repos' facts from `state`, holding back events up to a quarter of
        `max_memory` (or of HELD_BYTES_DEFAULT's four times)."""
        held = (max_memory or HELD_BYTES_DEFAULT * 4) // 4
        memory = MemoryGate(max_memory, children=children)
        return cls(StreamCounters(), memory, RepoBook(state.load_repos(), held))

    def facts(self, **fixed: Any) -> Callable[[], dict[str, Any]]:
        """What a running stream shows (progress, metrics, status, the summary), as a call."""
        counters, memory, book = self.counters, self.memory, self.book

        def facts() -> dict[str, Any]:
            data = counters.snapshot(memory.rss())
            data.update(
                desynchronized_repos=book.count_desynchronized(),
                repos_known=len(book),
                held_bytes=book.held_bytes,
                **fixed,
            )
            return data

        return facts


def stream_probe(config: FirehoseConfig, session: aiohttp.ClientSession) -> Opener:
    """Probes of the stream's host at a cursor (its head, a window's first event)."""
    return probe_with(
        subscribe,
        config.from_host,
        session=session,
        allow_private_network=config.allow_private_network,
    )


@contextlib.contextmanager
def stopped_by_signals(stop: Callable[[], None]) -> Iterator[None]:
    """SIGTERM and SIGINT call `stop` (in the running loop) while the block runs."""
    loop = asyncio.get_running_loop()
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop)
    try:
        yield
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)


STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def make_consumer(
    config: FirehoseConfig,
    *,
    source: str,
    session: aiohttp.ClientSession,
    client: XrpcClient,
    sink: StreamSink,
    state: StreamStateStore,
    parts: ConsumerParts,
    probe: Opener,
    stats: Callable[[], dict[str, Any]],
    subscribe: Callable[..., AsyncIterator[bytes]] = subscribe,
    feed: Feed | None = None,
) -> Consumer:
    """The consumer of one stream (or of one shard's feed) with `config`'s rules."""
    counters, book = parts.counters, parts.book
    resolver = IdentityResolver(client, config.plc_url)
    keep_did = _did_filter(config.dids_file)
    keep_collection = collection_filter(config.collections)
    return Consumer(
        url=config.from_host,
        source=source,
        session=session,
        allow_private_network=config.allow_private_network,
        sink=sink,
        state=state,
        book=book,
        resolver=resolver,
        counters=counters,
        probe=probe,
        batch_size=config.events_per_batch(),
        batch_delay=config.batch_delay,
        flush_seconds=config.flush_seconds,
        max_concurrent=config.max_concurrent,
        memory=parts.memory,
        until_live=config.until_live and feed is None,
        duration=config.duration if feed is None else None,
        make_applier=lambda **hooks: Applier(
            book=book,
            resolver=resolver,
            counters=counters,
            verify=config.verify_signatures,
            keep_did=keep_did,
            keep_collection=keep_collection,
            **hooks,
        ),
        make_resyncer=lambda **hooks: Resyncer(
            client=client,
            resolver=resolver,
            stream_id=config.stream_id,
            collections=config.collections,
            verify=config.verify_signatures,
            max_concurrent=config.max_concurrent,
            max_repo_bytes=config.max_repo_bytes,
            **hooks,
        ),
        stats=stats,
        decoder=_decoder(config, keep_collection),
        subscribe=subscribe,
        feed=feed,
    )


@contextlib.asynccontextmanager
async def stream_clients(
    config: FirehoseConfig,
) -> AsyncIterator[tuple[aiohttp.ClientSession, XrpcClient]]:
    """A session for the stream (no overall timeout: it stays open for days) and an XRPC
    client for DID documents and re-fetches."""
    guard = config.allow_private_network
    stream_session = make_session(
        HttpSettings(
            connect_timeout=10.0, read_timeout=None, total_timeout=None, allow_private_network=guard
        )
    )
    session = make_session(HttpSettings(allow_private_network=guard))
    limiter = side_limiter(config.max_concurrent)
    client = XrpcClient(AiohttpTransport(session, guard), guard, limiter)
    try:
        yield stream_session, client
    finally:
        await stream_session.close()
        await session.close()


async def _start(
    config: FirehoseConfig, state: StreamStateStore, sink: StreamSink, source: str, probe: Opener
) -> int | None:
    """Where to start: the saved cursor (the older of the stream's and the sink's), else
    --cursor, else the first event inside --since, else the live head."""
    saved = await saved_cursor(config, state, sink, source)
    if saved is not None:
        log.info("resuming %s after seq %d", config.from_host, saved, extra={"event": "resume"})
        return saved
    return await chosen_start(config, probe)


async def saved_cursor(
    config: FirehoseConfig, state: StreamStateStore, sink: StreamSink, source: str
) -> int | None:
    """The cursor saved for `source`: the older of the stream's and the sink's (None with
    --reset-cursor, which forgets the stream's)."""
    if config.reset_cursor:
        state.reset_cursor(source)
        return None
    saved = state.cursor(source)
    in_sink = await asyncio.to_thread(sink.cursor, source)
    known = [c for c in (saved[0] if saved else None, in_sink) if c is not None]
    return min(known) if known else None


async def chosen_start(config: FirehoseConfig, probe: Opener) -> int | None:
    """Where a stream with no saved cursor starts: --cursor, else the first event inside
    --since, else the live head (None)."""
    if config.cursor is not None:
        return config.cursor
    if config.since is None:
        return None
    if config.since == "all":
        return 0
    when = datetime.fromisoformat(config.since)
    head = await find_head(probe)
    start, oldest = await first_at_or_after(probe, when, head)
    oldest_time = event_time(oldest)
    if start == 0 and oldest_time is not None and oldest_time > when:
        log.warning(
            f"{config.from_host} keeps events only from seq {oldest.seq} ({oldest.time}); "
            f"the window from {config.since} to then is missing. Close it with a snapshot "
            f"(skyfill run --from-host {config.from_host} --since {config.since} --sink "
            "<the same sink>) while this stream goes on",
            extra={"event": "window_not_kept"},
        )
    return start


def following_labels(
    config: FirehoseConfig, where: StreamDir, session: aiohttp.ClientSession, client: XrpcClient
) -> contextlib.AbstractAsyncContextManager[object]:
    """`--labels URL`: those labelers followed into the same sink beside the consumer
    (their cursors in the sink and in the stream's directory, `labels.sqlite`); stopped
    with it (with --until-live, once live)."""
    if not config.labels:
        return contextlib.nullcontext()
    labels = LabelsConfig(
        from_labelers=config.labels,
        sink=config.sink,
        stream_id=config.stream_id,
        until_live=config.until_live,
        plc_url=config.plc_url,
        allow_private_network=config.allow_private_network,
    )
    return following(labels, where.root, session=session, client=client)


def _decoder(config: FirehoseConfig, keep_collection: CollectionFilter | None) -> Decoder:
    workers = config.workers()
    if not workers:
        check = not config.verify_signatures
        return InlineDecoder(check=check, keep_collection=keep_collection)
    settings = WorkerSettings(
        verify=config.verify_signatures, collections=tuple(config.collections or ())
    )
    return ProcessDecoder(workers, settings)


def _did_filter(path: str | None) -> Any:
    if path is None:
        return lambda did: True
    wanted = frozenset(read_did_file(Path(path)).dids)
    return wanted.__contains__


def write_manifest(where: StreamDir, config: FirehoseConfig, target: str) -> None:
    data = {
        "stream_id": config.stream_id,
        "from_host": config.from_host,
        "sink": target,
        "config": {**config.to_dict(), "sink": target},
        "started_at": time.time(),
    }
    where.root.mkdir(parents=True, exist_ok=True)
    where.manifest.write_bytes(orjson.dumps(data, option=orjson.OPT_INDENT_2))

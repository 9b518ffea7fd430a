"""`skyfill ingest`: one host's event stream into Redis streams, for `skyfill index`.

Events are read from the host's head (or the saved cursor) and written, untouched, to the
partition stream their DID hashes to, in seq order; each write (a few hundred events at
most) goes in one MULTI/EXEC with the source's cursor, so a restart — after `kill -9`
too — goes on from the last event written, with nothing lost or written twice. Meanwhile
the host's repos (listRepos, with its own saved cursor) are put once each into the
backfill streams of their partitions, for the workers to snapshot. Streams are trimmed
only below what every consumer group has acknowledged.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import redis

from skyfill import gcpolicy
from skyfill.atproto.listing import list_repos
from skyfill.atproto.stream.client import (
    SUBSCRIBE_LABELS,
    SUBSCRIBE_REPOS,
    StreamClosed,
    StreamUnavailable,
    resubscribing,
    subscribe,
)
from skyfill.atproto.stream.frames import peek
from skyfill.atproto.xrpc import XrpcClient
from skyfill.firehose.live_config import IngestConfig
from skyfill.firehose.live_keys import (
    LiveKeys,
    connect_checked,
    labeler_number,
    partition_of,
    stored_partitions,
)
from skyfill.firehose.run import source_key
from skyfill.firehose.window import find_head, probe_with
from skyfill.net.aiohttp_transport import AiohttpTransport
from skyfill.net.http import HttpSettings, make_session
from skyfill.ratelimit.local import side_limiter

log = logging.getLogger(__name__)

WRITE_EVENTS = 500
WRITE_SECONDS = 0.2
TRIM_SECONDS = 5.0


@dataclass
class _Labeler:
    url: str
    number: int
    read: int
    """The last seq read (and, once written, `seq`)."""
    seq: int = 0
    head: int | None = None

    def __post_init__(self) -> None:
        self.seq = self.read


@dataclass
class IngestCounters:
    events: int = 0
    labels: int = 0
    queued_repos: int = 0
    seq: int | None = None
    head: int | None = None
    trimmed: int = 0
    reconnects: int = 0
    live: bool = False
    facts: dict[str, Any] = field(default_factory=dict)


def add_repos(config: IngestConfig) -> int:
    """`--add-repo DID…`: each into its backfill stream (again if it was there before)."""
    client = connect_checked(config.state)
    keys = LiveKeys(config.name)
    partitions = stored_partitions(client, keys, None)
    pipe = client.pipeline(transaction=True)
    for did in config.add_repo:
        pipe.sadd(keys.queued, did)
        pipe.xadd(keys.backfill(partition_of(did, partitions)), {"did": did})
    pipe.execute()
    return len(config.add_repo)


def run_ingest(config: IngestConfig) -> IngestCounters:
    client = connect_checked(config.state)
    keys = LiveKeys(config.name)
    partitions = stored_partitions(client, keys, config.partitions)
    client.hset(keys.meta, f"source:{source_key(config.from_host)}", config.from_host)
    gcpolicy.tune()
    return asyncio.run(_Ingester(config, client, keys, partitions).run())


class _Ingester:
    def __init__(
        self, config: IngestConfig, client: redis.Redis, keys: LiveKeys, partitions: int
    ) -> None:
        self.config = config
        self.client = client
        self.keys = keys
        self.partitions = partitions
        self.source = source_key(config.from_host)
        self.counters = IngestCounters()
        self._buffer: list[tuple[str, dict[Any, Any]]] = []
        """Entries to add (stream, fields), in order, and the cursors they move."""
        self._cursors: dict[tuple[str, str], int] = {}
        self._labelers: list[_Labeler] = []
        self._stop = asyncio.Event()
        self._listed = asyncio.Event()

    async def run(self) -> IngestCounters:
        guard = self.config.allow_private_network
        stream_session = make_session(
            HttpSettings(read_timeout=None, total_timeout=None, allow_private_network=guard)
        )
        session = make_session(HttpSettings(allow_private_network=guard))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stop)
        tasks: list[asyncio.Task] = []
        try:
            if self.config.from_host:
                tasks += await self._start_events(stream_session, session)
            else:
                self._listed.set()
            for url in self.config.labels:
                tasks.append(await self._start_labels(stream_session, url))
            tasks.append(asyncio.create_task(self._trim_loop(), name="ingest trim"))
            await self._until_done()
            for task in tasks:
                task.cancel()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await asyncio.to_thread(self._write)
            self.counters.trimmed += await asyncio.to_thread(self._trim)
            for result in results:
                if isinstance(result, BaseException) and not isinstance(
                    result, asyncio.CancelledError
                ):
                    raise result
        finally:
            for task in tasks:
                task.cancel()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
            await stream_session.close()
            await session.close()
        return self.counters

    async def _start_events(self, stream_session: Any, session: Any) -> list[asyncio.Task]:
        guard = self.config.allow_private_network
        probe = probe_with(
            subscribe, self.config.from_host, session=stream_session, allow_private_network=guard
        )
        start = self._saved_cursor()
        if start is None:
            start = self.config.cursor
        if start is None or self.config.until_live:
            head = await find_head(probe)
            self.counters.head = head
            start = head if start is None else start
        self.counters.seq = start  # written before: the head may be reached already
        tasks = [asyncio.create_task(self._read(stream_session, start), name="ingest reader")]
        if self.config.list_repos:
            client = XrpcClient(AiohttpTransport(session, guard), guard, side_limiter(4))
            tasks.append(asyncio.create_task(self._list(client), name="ingest listing"))
        else:
            self._listed.set()
        return tasks

    async def _start_labels(self, stream_session: Any, url: str) -> asyncio.Task:
        """A labeler's labels from its saved cursor (else from the first: every label)."""
        number = await asyncio.to_thread(labeler_number, self.client, self.keys, url)
        raw = self.client.hget(self.keys.label_cursor, url)
        labeler = _Labeler(url, number, 0 if raw is None else int(raw))
        if self.config.until_live:
            probe = probe_with(
                subscribe, url, session=stream_session,
                allow_private_network=self.config.allow_private_network, method=SUBSCRIBE_LABELS,
            )  # fmt: skip
            labeler.head = await find_head(probe)
        self._labelers.append(labeler)
        return asyncio.create_task(
            self._read_labels(stream_session, labeler), name=f"ingest labels {url}"
        )

    def stop(self) -> None:
        self._stop.set()

    async def _until_done(self) -> None:
        deadline = None if self.config.duration is None else time.monotonic() + self.config.duration
        while not self._stop.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return
            if self.config.until_live and self._listed.is_set() and self._caught_up():
                self.counters.live = True
                return
            await asyncio.sleep(WRITE_SECONDS)
            if self._buffer:
                await asyncio.to_thread(self._write)

    def _caught_up(self) -> bool:
        labels = all(
            labeler.head is not None and labeler.seq >= labeler.head for labeler in self._labelers
        )
        if not self.config.from_host:
            return labels
        head, seq = self.counters.head, self.counters.seq
        events = head is not None and (head == 0 or (seq is not None and seq >= head))
        return events and labels

    def _saved_cursor(self) -> int | None:
        raw = self.client.hget(self.keys.cursor, self.source)
        return None if raw is None else int(raw)

    # -- events -------------------------------------------------------------------------

    async def _read(self, session: Any, start: int) -> None:
        """The host's events, each to its partition's stream."""
        cursor = start

        def add(message: bytes) -> None:
            nonlocal cursor
            _, seq, did = peek(message)
            if seq is None or did is None:
                return  # #info and error frames: nothing to index
            stream = self.keys.events(partition_of(did, self.partitions))
            self._buffer.append((stream, {"seq": seq, "did": did, "data": message}))
            self._cursors[(self.keys.cursor, self.source)] = seq
            self.counters.events += 1
            cursor = seq

        await self._keep_reading(self.config.from_host, lambda: cursor, add, session)

    async def _keep_reading(
        self,
        url: str,
        cursor: Callable[[], int],
        add: Callable[[bytes], None],
        session: Any,
        method: str = SUBSCRIBE_REPOS,
    ) -> None:
        """`url`'s messages from the cursor on, each to `add`, written every few hundred;
        after a dropped connection, again from the cursor, with backoff."""

        def dropped(exc: StreamClosed | StreamUnavailable) -> None:
            self.counters.reconnects += 1
            log.info("ingest %s: %s; reconnecting", url, exc)

        async for message in resubscribing(
            subscribe,
            url,
            cursor,
            dropped=dropped,
            session=session,
            allow_private_network=self.config.allow_private_network,
            method=method,
        ):
            add(message)
            if len(self._buffer) >= WRITE_EVENTS:
                await asyncio.to_thread(self._write)

    def _write(self) -> None:
        """The buffered entries and the cursors after them, in one transaction."""
        buffer, self._buffer = self._buffer, []
        cursors, self._cursors = self._cursors, {}
        if not buffer and not cursors:
            return
        pipe = self.client.pipeline(transaction=True)
        for stream, fields in buffer:
            pipe.xadd(stream, fields)
        for (key, source), seq in cursors.items():
            pipe.hset(key, source, seq)
        pipe.execute()
        for (key, source), seq in cursors.items():
            if key == self.keys.cursor:
                self.counters.seq = seq
            else:
                next(lab for lab in self._labelers if lab.url == source).seq = seq

    async def _read_labels(self, session: Any, labeler: _Labeler) -> None:
        """A labeler's messages, to its label stream."""

        def add(message: bytes) -> None:
            seq = peek(message)[1]
            if seq is None:
                return  # #info and error frames: the index has nothing to do
            stream = self.keys.labels(labeler.number)
            self._buffer.append((stream, {"seq": seq, "data": message}))
            self._cursors[(self.keys.label_cursor, labeler.url)] = seq
            self.counters.labels += 1
            labeler.read = seq

        await self._keep_reading(
            labeler.url, lambda: labeler.read, add, session, method=SUBSCRIBE_LABELS
        )

    # -- repos to snapshot ------------------------------------------------------------

    async def _list(self, client: XrpcClient) -> None:
        saved = self.client.hget(self.keys.listing, self.source)
        if saved == b"done":
            self._listed.set()
            return
        cursor = _id(saved) if saved else None
        async for page in list_repos(client, self.config.from_host, cursor=cursor):
            dids = [repo.did for repo in page.items]
            await asyncio.to_thread(self._queue_repos, dids, page.cursor)
        self.client.hset(self.keys.listing, self.source, "done")
        self._listed.set()

    def _queue_repos(self, dids: list[str], cursor: str | None) -> None:
        """Each DID not queued before into its backfill stream, and the listing's cursor,
        in one script (atomic: a DID is marked queued exactly when its entry is written)."""
        args: list[str] = [cursor or ""]
        for did in dids:
            args += [did, self.keys.backfill(partition_of(did, self.partitions))]
        added = self.client.eval(
            _QUEUE_SCRIPT, 2, self.keys.queued, self.keys.listing, self.source, *args
        )
        self.counters.queued_repos += int(added)

    # -- trimming -------------------------------------------------------------------------

    async def _trim_loop(self) -> None:
        while True:
            self.counters.trimmed += await asyncio.to_thread(self._trim)
            await asyncio.sleep(TRIM_SECONDS)

    def _trim(self) -> int:
        trimmed = 0
        streams = [self.keys.labels(labeler.number) for labeler in self._labelers]
        for partition in range(self.partitions):
            streams += [self.keys.events(partition), self.keys.backfill(partition)]
        for stream in streams:
            floor = acknowledged_floor(self.client, stream)
            if floor is not None:
                trimmed += int(self.client.xtrim(stream, minid=floor, approximate=False))
        return trimmed


_QUEUE_SCRIPT = """
local added = 0
for i = 3, #ARGV, 2 do
  if redis.call('SADD', KEYS[1], ARGV[i]) == 1 then
    redis.call('XADD', ARGV[i + 1], '*', 'did', ARGV[i])
    added = added + 1
  end
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return added
"""


def acknowledged_floor(client: redis.Redis, stream: str) -> str | None:
    """The lowest entry id some consumer group still needs (pending or not yet delivered):
    everything below it has been acknowledged by every group. None: keep everything (no
    group reads the stream yet)."""
    try:
        groups = client.xinfo_groups(stream)
    except redis.ResponseError:
        return None  # no such stream yet
    if not groups:
        return None
    floors = []
    for group in groups:
        name = group["name"]
        pending = client.xpending(stream, name)
        if pending and pending.get("pending"):
            floors.append(_id(pending["min"]))
        else:
            floors.append(_next_id(_id(group["last-delivered-id"])))
    return min(floors, key=_id_key)


def _id(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _next_id(entry: str) -> str:
    ms, _, n = entry.partition("-")
    return f"{ms}-{int(n or 0) + 1}"


def _id_key(entry: str) -> tuple[int, int]:
    ms, _, n = entry.partition("-")
    return int(ms), int(n or 0)

"""`skyfill index`: a worker that applies the live streams in Redis to a SQL sink.

The events of one repo sit in one partition (`live_keys`), so order is kept by letting
one worker at a time apply a partition: a worker holds a partition's lease (a key with a
TTL it renews) and runs a stream consumer over it (`consumer.Consumer`, the same rules,
verification and re-fetches as `skyfill firehose`), reading with the consumer group
`index`. Workers heartbeat into a set; each takes its fair share of the partitions
(ceil(partitions / workers)) and gives back what is above it, so a second worker gets
half. A worker that dies stops renewing: its leases expire and the others take its
partitions over, first claiming the entries it was delivered but had not acknowledged
(XAUTOCLAIM) and applying them again, which changes nothing (rev order per repo).

A partition's state (cursor, per-repo facts) is in Redis (`redis_state.py`), saved after
the sink's transaction together with the XACK of the entries it covers. The partition's
backfill stream holds repos to snapshot: each is marked desynchronized, so its events
are held while it is fetched whole (getRepo) and the newer ones applied after.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import signal
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import redis
import redis.asyncio as aioredis

from skyfill import gcpolicy
from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.xrpc import XrpcClient
from skyfill.firehose.apply import Applier
from skyfill.firehose.book import ACTIVE, RepoBook
from skyfill.firehose.consumer import Consumer
from skyfill.firehose.group_reader import GroupReader
from skyfill.firehose.live_config import IndexConfig
from skyfill.firehose.live_keys import GROUP, LiveKeys, connect_checked, stored_partitions
from skyfill.firehose.redis_state import RedisLabelState, RedisStreamState
from skyfill.firehose.resync import Resyncer
from skyfill.firehose.stats import StreamCounters
from skyfill.labels.checker import LabelChecker
from skyfill.labels.follower import LabelFollower
from skyfill.labels.stats import LabelCounters
from skyfill.net.aiohttp_transport import AiohttpTransport
from skyfill.net.http import HttpSettings, make_session
from skyfill.ratelimit.local import side_limiter
from skyfill.ratelimit.memory_gate import MemoryGate
from skyfill.sinks.changes import StreamSink
from skyfill.sinks.factory import open_label_sink, open_stream_sink
from skyfill.sinks.labels import LabelSink

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
"""Leases are renewed, heartbeats written and shares computed this often."""
HELD_BYTES = 64 << 20
MAX_REPO_BYTES = 1 << 30

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass
class IndexTotals:
    partitions_run: int = 0
    applied: int = 0
    snapshots: int = 0
    reclaimed: int = 0
    labels_applied: int = 0
    seen: set[int] = field(default_factory=set)


def run_index(config: IndexConfig) -> IndexTotals:
    client = connect_checked(config.state)
    keys = LiveKeys(config.name)
    partitions = stored_partitions(client, keys, None)
    sink = open_stream_sink(config.sink, stream_id=f"index-{config.name}")
    sink.check()
    sink.close()
    gcpolicy.tune()
    return asyncio.run(_Worker(config, client, keys, partitions).run())


class _Partition:
    """One partition this worker holds: its reader and the consumer applying it."""

    def __init__(self, worker: _Worker, index: int) -> None:
        self.worker = worker
        self.index = index
        self.events_key = worker.keys.events(index)
        self.backfill_key = worker.keys.backfill(index)
        self.delivered: collections.deque[tuple[int, bytes]] = collections.deque()
        self.lock = threading.Lock()
        self.snapshot_ids: list[tuple[str, bytes]] = []
        """Backfill entries read, by DID: acknowledged by the save that writes the DID's
        facts (its mark as desynchronized, or what its snapshot brought)."""
        self.reader: GroupReader | None = None
        self.consumer: Consumer | None = None
        self.book: RepoBook | None = None
        self.sink: StreamSink | None = None
        self.task: asyncio.Task[None] | None = None

    # -- what a save acknowledges --------------------------------------------------------

    def acks(self, seq: int, saved: set[str]) -> list[tuple[bytes | str, list[bytes]]]:
        """Entries covered by a save through `seq` that writes the facts of the DIDs
        `saved`: events up to `seq`, and the snapshot requests of those DIDs."""
        events = []
        while self.delivered and self.delivered[0][0] <= seq:
            events.append(self.delivered.popleft()[1])
        with self.lock:  # a save runs in a thread, the reader on the loop
            snapshots = [entry for did, entry in self.snapshot_ids if did in saved]
            self.snapshot_ids = [(d, entry) for d, entry in self.snapshot_ids if d not in saved]
        return [(self.events_key, events), (self.backfill_key, snapshots)]

    # -- reading --------------------------------------------------------------------------

    async def subscribe(self, url: str, cursor: int | None, **_: Any) -> AsyncIterator[bytes]:
        """The partition's entries as stream messages (see `GroupReader`). Entries at or
        below the saved cursor were applied already: acknowledged and skipped."""
        self.reader = GroupReader(
            self.worker.aclient, self.worker.config.worker_id, [self.events_key, self.backfill_key]
        )
        self.delivered.clear()
        async for key, entry_id, fields in self.reader.entries():
            message = await self._entry(key, entry_id, fields, cursor)
            if message is not None:
                yield message

    async def _entry(
        self, key: str, entry_id: bytes, fields: dict | None, cursor: int | None
    ) -> bytes | None:
        assert self.reader is not None
        if not fields:  # trimmed away while pending: nothing to apply
            await self.reader.ack(key, entry_id)
            return None
        if key == self.backfill_key:
            self._snapshot(_text(fields[b"did"]), entry_id)
            return None
        seq = int(fields[b"seq"])
        if cursor is not None and seq <= cursor:
            await self.reader.ack(key, entry_id)
            return None
        self.delivered.append((seq, entry_id))
        return fields[b"data"]

    def _snapshot(self, did: str, entry_id: bytes) -> None:
        consumer, book = self.consumer, self.book
        assert consumer is not None and book is not None
        facts = book.get(did)
        if facts is None or facts.phase == ACTIVE:
            consumer.applier.desynchronize(did, "snapshot requested (backfill stream)")
            self.worker.totals.snapshots += 1
        with self.lock:
            self.snapshot_ids.append((did, entry_id))

    def idle(self, seconds: float) -> bool:
        consumer, book = self.consumer, self.book
        return (
            consumer is not None
            and book is not None
            and self.reader is not None
            and time.monotonic() - self.reader.last_entry >= seconds
            and consumer.resyncer.in_flight == 0
            and book.count_desynchronized() == 0
        )


class _LabelUnit:
    """One labeler's stream this worker holds, and the follower applying it."""

    def __init__(self, worker: _Worker, number: int, url: str) -> None:
        self.worker = worker
        self.number = number
        self.url = url
        self.key = worker.keys.labels(number)
        self.delivered: collections.deque[tuple[int, bytes]] = collections.deque()
        self.reader: GroupReader | None = None
        self.follower: LabelFollower | None = None
        self.sink: LabelSink | None = None
        self.task: asyncio.Task[None] | None = None

    def acks(self, seq: int, saved: set[str]) -> list[tuple[bytes | str, list[bytes]]]:
        done = []
        while self.delivered and self.delivered[0][0] <= seq:
            done.append(self.delivered.popleft()[1])
        return [(self.key, done)]

    async def subscribe(self, url: str, cursor: int | None, **_: Any) -> AsyncIterator[bytes]:
        """The labeler's messages after `cursor` (see `GroupReader`)."""
        self.reader = reader = GroupReader(
            self.worker.aclient, self.worker.config.worker_id, [self.key]
        )
        self.delivered.clear()
        async for key, entry_id, fields in reader.entries():
            if not fields:
                await reader.ack(key, entry_id)
                continue
            seq = int(fields[b"seq"])
            if cursor is not None and seq <= cursor:
                await reader.ack(key, entry_id)
                continue
            self.delivered.append((seq, entry_id))
            yield fields[b"data"]

    def idle(self, seconds: float) -> bool:
        reader = self.reader
        return (
            reader is not None
            and time.monotonic() - reader.last_entry >= seconds
            and not self.delivered
        )


class _Worker:
    def __init__(
        self, config: IndexConfig, client: redis.Redis, keys: LiveKeys, partitions: int
    ) -> None:
        self.config = config
        self.client = client
        self.aclient = aioredis.Redis.from_url(config.state, socket_connect_timeout=5)
        self.keys = keys
        self.partitions = partitions
        self.totals = IndexTotals()
        self.held: dict[int, _Partition] = {}
        self.labelers: dict[int, _LabelUnit] = {}
        self._stop = asyncio.Event()

    async def run(self) -> IndexTotals:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self._stop.set)
        guard = self.config.allow_private_network
        session = self.session = make_session(HttpSettings(allow_private_network=guard))
        self.xrpc = XrpcClient(
            AiohttpTransport(session, guard), guard, side_limiter(self.config.max_concurrent)
        )
        self.resolver = IdentityResolver(self.xrpc, self.config.plc_url)
        deadline = None
        if self.config.duration is not None:
            deadline = time.monotonic() + self.config.duration
        try:
            while not self._stop.is_set():
                if deadline is not None and time.monotonic() >= deadline:
                    break
                await self._tick()
                if self._idle():
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), TICK_SECONDS)
        finally:
            for index in list(self.held):
                await self._release(index)
            for number in list(self.labelers):
                await self._release_labels(number)
            self.client.zrem(self.keys.workers, self.config.worker_id)
            await session.close()
            await self.aclient.aclose()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(sig)
        return self.totals

    def _idle(self) -> bool:
        """With --until-idle: every partition is held by a live worker, and this one's
        have had nothing new for that long (a dead worker's partitions are not idle:
        they wait for their leases to lapse and to be taken over)."""
        until = self.config.until_idle
        if until is None or len(self.held) < self._share():
            return False
        if not all(part.idle(until) for part in self.held.values()):
            return False
        if not all(unit.idle(until) for unit in self.labelers.values()):
            return False
        labelers: Any = self.client.hvals(self.keys.labelers)
        numbers = [int(n) for n in labelers]
        if any(self.client.get(self.keys.labels_lease(n)) is None for n in numbers):
            return False
        holders = self.client.mget([self.keys.lease(i) for i in range(self.partitions)])
        if any(holder is None for holder in holders):
            return False
        fresh = time.time() - 3 * TICK_SECONDS
        alive: Any = self.client.zrangebyscore(self.keys.workers, fresh, "+inf")
        return all(holder in set(alive) for holder in holders)

    # -- leases -------------------------------------------------------------------------

    async def _tick(self) -> None:
        now = time.time()
        me = self.config.worker_id
        self.client.zadd(self.keys.workers, {me: now})
        self.client.zremrangebyscore(self.keys.workers, 0, now - self.config.lease_seconds)
        lease_ms = int(self.config.lease_seconds * 1000)
        for index, part in list(self.held.items()):
            renewed = self.client.eval(_RENEW, 1, self.keys.lease(index), me, lease_ms)
            failed = part.task is not None and part.task.done()
            if not renewed or failed:
                await self._release(index)
        share = self._share()
        for index in self._order():
            if len(self.held) >= share:
                break
            if index not in self.held and self.client.set(
                self.keys.lease(index), me, nx=True, px=lease_ms
            ):
                self._take(index)
        while len(self.held) > share:
            await self._release(max(self.held))
        await self._tick_labels(me, lease_ms)

    async def _tick_labels(self, me: str, lease_ms: int) -> None:
        """Labelers' streams: each held by one worker at a time (no share: they are few)."""
        for number, unit in list(self.labelers.items()):
            renewed = self.client.eval(_RENEW, 1, self.keys.labels_lease(number), me, lease_ms)
            if not renewed or (unit.task is not None and unit.task.done()):
                await self._release_labels(number)
        labelers: Any = self.client.hgetall(self.keys.labelers)
        for url, number in ((_text(u), int(n)) for u, n in labelers.items()):
            if number not in self.labelers and self.client.set(
                self.keys.labels_lease(number), me, nx=True, px=lease_ms
            ):
                await self._take_labels(number, url)

    def _share(self) -> int:
        workers = max(1, int(self.client.zcard(self.keys.workers)))
        return math.ceil(self.partitions / workers)

    def _order(self) -> list[int]:
        """The partitions, starting at one of this worker's own (spreads the first takes)."""
        first = hash(self.config.worker_id) % self.partitions
        return [(first + i) % self.partitions for i in range(self.partitions)]

    def _take(self, index: int) -> None:
        part = _Partition(self, index)
        state = RedisStreamState(self.client, self.keys.state(index), GROUP, part.acks)
        part.consumer = self._consumer(part, state)
        part.task = asyncio.create_task(self._apply(part, state), name=f"partition {index}")
        self.held[index] = part
        self.totals.partitions_run += 1
        self.totals.seen.add(index)
        log.info("partition %d taken", index, extra={"event": "partition_taken"})

    async def _apply(self, part: _Partition, state: RedisStreamState) -> None:
        consumer = part.consumer
        assert consumer is not None
        source = self._source(part.index)
        saved = state.cursor(source)
        try:
            await consumer.run(saved[0] if saved else None)
        finally:
            self.totals.applied += consumer.counters.applied
            self.totals.reclaimed += part.reader.reclaimed if part.reader is not None else 0
            if part.sink is not None:
                part.sink.close()

    async def _take_labels(self, number: int, url: str) -> None:
        unit = _LabelUnit(self, number, url)
        state = RedisLabelState(self.client, self.keys.labels_state(number), GROUP, unit.acks)
        unit.sink = sink = open_label_sink(self.config.sink)
        await asyncio.to_thread(sink.check)
        checker = LabelChecker(
            self.resolver, url, state.did(url), pinned=lambda did: state.pin(url, did)
        )
        unit.follower = LabelFollower(
            url=url,
            sink=sink,
            state=state,
            checker=checker,
            counters=LabelCounters(url, did=checker.did),
            session=self.session,
            allow_private_network=self.config.allow_private_network,
            until_live=False,
            flush_seconds=0.5,
            subscribe=unit.subscribe,
        )
        start = await asyncio.to_thread(sink.cursor, url)
        unit.task = asyncio.create_task(unit.follower.run(start or 0), name=f"labels {url}")
        self.labelers[number] = unit
        log.info("labels of %s taken", url, extra={"event": "labels_taken"})

    async def _release_labels(self, number: int) -> None:
        unit = self.labelers.pop(number)
        if unit.follower is not None:
            unit.follower.stop()
        if unit.task is not None:
            with contextlib.suppress(Exception):
                await unit.task
            if not unit.task.cancelled() and unit.task.exception() is not None:
                log.error(
                    "labels of %s stopped: %s", unit.url, unit.task.exception(),
                    extra={"event": "labels_failed"},
                )  # fmt: skip
        if unit.follower is not None:
            self.totals.labels_applied += unit.follower.counters.labels_applied
        if unit.sink is not None:
            unit.sink.close()
        self.client.eval(_RELEASE, 1, self.keys.labels_lease(number), self.config.worker_id)

    async def _release(self, index: int) -> None:
        part = self.held.pop(index)
        if part.consumer is not None:
            part.consumer.stop()
        if part.task is not None:
            with contextlib.suppress(Exception):
                await part.task
            if not part.task.cancelled() and part.task.exception() is not None:
                log.error(
                    "partition %d stopped: %s", index, part.task.exception(),
                    extra={"event": "partition_failed"},
                )  # fmt: skip
        self.client.eval(_RELEASE, 1, self.keys.lease(index), self.config.worker_id)
        log.info("partition %d released", index, extra={"event": "partition_released"})

    def _source(self, index: int) -> str:
        return f"{self.config.name}/{index}"

    # -- one partition's consumer ---------------------------------------------------------

    def _consumer(self, part: _Partition, state: RedisStreamState) -> Consumer:
        config = self.config
        counters = StreamCounters()
        book = RepoBook(state.load_repos(), HELD_BYTES)
        stream_id = f"index-{config.name}-{part.index}"
        sink = open_stream_sink(config.sink, stream_id=stream_id)
        part.book, part.sink = book, sink
        consumer = Consumer(
            url=f"redis:{part.events_key}",
            source=self._source(part.index),
            session=self.session,  # unused: the partition reader reads Redis
            allow_private_network=config.allow_private_network,
            sink=sink,
            state=state,
            book=book,
            resolver=self.resolver,
            counters=counters,
            probe=_no_probe,
            batch_size=config.batch_size,
            batch_delay=0.0,
            flush_seconds=0.5,
            max_concurrent=config.max_concurrent,
            memory=MemoryGate(None),
            until_live=False,
            duration=None,
            make_applier=lambda **hooks: Applier(
                book=book,
                resolver=self.resolver,
                counters=counters,
                verify=config.verify_signatures,
                keep_did=lambda did: True,
                keep_collection=None,
                **hooks,
            ),
            make_resyncer=lambda **hooks: Resyncer(
                client=self.xrpc,
                resolver=self.resolver,
                stream_id=stream_id,
                collections=None,
                verify=config.verify_signatures,
                max_concurrent=config.max_concurrent,
                max_repo_bytes=MAX_REPO_BYTES,
                **hooks,
            ),
            subscribe=part.subscribe,
        )
        return consumer


async def _no_probe(cursor: int) -> Any:
    raise RuntimeError("an index partition has no head to probe")


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

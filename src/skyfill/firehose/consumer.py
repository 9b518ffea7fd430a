"""The stream consumer: reads a host's events from a cursor, applies them to a sink in
batches (each with the cursor it covers), and reconnects after a dropped connection.

A pipeline, in seq order throughout:
- one task reads messages and hands them in chunks to the decode stage (`decoding.py`:
  in this process, or verified in worker processes, `workers.py`);
- as a chunk comes back decoded, the identities it names start resolving (a few at a
  time; an `#identity` event's re-resolution too), ahead of the applier;
- the main loop applies the decoded events in seq order and flushes a batch every
  `batch_size` events or `flush_seconds`: the sink's transaction first (rows and cursor),
  then the stream's state (cursor and repo facts). A batch is written while the next one
  is applied, one write at a time.
Re-fetches of desynchronized repos run beside it and come back through the same queue, so
everything the sink sees is in one order.

A shard of a split stream (`shards.py`) reads a `feed` instead of the host: its own
messages, and the seqs the router has routed through, which move its cursor on past the
other shards' events; the feed's end is the stream's (what is read is applied, re-fetches
finish, the cursor is saved).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from skyfill.atproto.identity import Identity, IdentityResolver
from skyfill.atproto.stream.client import StreamClosed, StreamUnavailable, resubscribing, subscribe
from skyfill.atproto.stream.frames import (
    MAX_FRAME_BYTES,
    ErrorFrame,
    Frame,
    FrameError,
    IdentityFrame,
    InfoFrame,
    UnknownFrame,
    peek,
)
from skyfill.firehose.apply import Applier, Snapshot
from skyfill.firehose.book import RepoBook
from skyfill.firehose.decoding import Decoded, Decoder, InlineDecoder, Precheck
from skyfill.firehose.errors import StreamStopped, gap_line, refusal_line
from skyfill.firehose.resync import Resyncer
from skyfill.firehose.state import StreamStateStore
from skyfill.firehose.stats import StreamCounters
from skyfill.firehose.window import Opener, find_head, head_from
from skyfill.ratelimit.memory_gate import MemoryGate
from skyfill.sinks.changes import Change, ChangeBatch, StreamSink

log = logging.getLogger(__name__)

RECEIVE_LIMIT = 4 * MAX_FRAME_BYTES
"""Messages up to this size are received (and a frame over MAX_FRAME_BYTES refused with
its seq); a larger one ends the connection, and the stream goes on after the next seq."""
CHUNK_FRAMES = 256
"""Messages handed to the decode stage at once (fewer when the stream is quiet)."""
QUEUE_CHUNKS = 8
"""Chunks read ahead of the one being applied (their DIDs are resolved meanwhile)."""
IDLE_SECONDS = 0.05
"""How long the applier waits for a chunk before it hands over a partial one."""
KEY_WAIT_SECONDS = 10.0
"""How long a chunk waits for the keys it names before it is decoded without them (the
applier then checks those signatures itself)."""
MESSAGE_TOO_BIG = 1009
GROUP_BATCHES = 8
"""While the sink still writes a batch, the next one grows up to this many times
--batch-size instead of waiting for it: a slower sink gets fewer, larger transactions."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    snap: Snapshot


@dataclass(frozen=True, slots=True)
class _Through:
    """A shard's feed: every event up to `seq` that is this shard's has been read."""

    seq: int


class _End:
    """A shard's feed has ended: apply what came before and stop."""


Item = asyncio.Task[list[Decoded]] | _Snapshot | _Through | _End
Feed = AsyncIterator[tuple[list[bytes], int]]
"""A shard's messages from the router, chunk by chunk, each with the seq the router has
routed through."""


class Consumer:
    def __init__(
        self,
        *,
        url: str,
        source: str,
        session: aiohttp.ClientSession,
        allow_private_network: bool,
        sink: StreamSink,
        state: StreamStateStore,
        book: RepoBook,
        resolver: IdentityResolver,
        counters: StreamCounters,
        probe: Opener,
        batch_size: int,
        batch_delay: float,
        flush_seconds: float,
        max_concurrent: int,
        memory: MemoryGate,
        until_live: bool,
        duration: float | None,
        make_applier: Callable[..., Applier],
        make_resyncer: Callable[..., Resyncer],
        stats: Callable[[], dict] = dict,
        decoder: Decoder | None = None,
        subscribe: Callable[..., AsyncIterator[bytes]] = subscribe,
        feed: Feed | None = None,
    ) -> None:
        self._url = url
        self._subscribe = subscribe
        self._feed = feed
        self._ended = False
        self._source = source
        self._session = session
        self._allow_private = allow_private_network
        self._sink = sink
        self._state = state
        self._book = book
        self._resolver = resolver
        self.counters = counters
        self._probe = probe
        self._batch_size = batch_size
        self._batch_delay = batch_delay
        self._flush_seconds = flush_seconds
        self._memory = memory
        self._until_live = until_live
        self._deadline = None if duration is None else time.monotonic() + duration
        self._queue: asyncio.Queue[Item] = asyncio.Queue(QUEUE_CHUNKS)
        self._decoder = decoder or InlineDecoder()
        self._chunk: list[bytes] = []
        self._chunk_dids: set[str] = set()
        self._resolving = asyncio.Semaphore(max_concurrent)
        self._looking_up: dict[str, asyncio.Task] = {}
        self._fresh: dict[int, asyncio.Task[Identity]] = {}
        self._writing: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._changes: list[Change] = []
        self._events_in_batch = 0
        self._batch_started = time.monotonic()
        self._pending_seq: int | None = None
        self._pending_time: str | None = None
        self._read_cursor: int | None = None
        self._start: int | None = None
        self._head: asyncio.Task[int] | None = None
        """With --until-live, the probe of the head while it runs."""
        self._target: int | None = None
        self._reprobed = False
        self._outdated = False
        self._stats = stats
        self.resyncer = make_resyncer(deliver=self._deliver, started=self._book.release)
        self.applier = make_applier(
            request_resync=self.resyncer.request, fresh_identity=self._fresh_identity
        )

    def stop(self) -> None:
        """Finish the current batch, save the cursor and return (a signal handler)."""
        self._stop.set()

    async def run(self, start: int | None) -> None:
        """Stream from after `start` (None: live events only) until stopped, live (with
        --until-live) or out of time."""
        self._read_cursor = start
        self.counters.cursor = start
        for did in list(self._book.desynchronized()):  # left so by an earlier run
            self.resyncer.request(did)
        if self._until_live:  # the head is probed beside the replay, which need not wait
            self._start = start
            self._head = asyncio.create_task(find_head(self._probe), name="head probe")
        reader = asyncio.create_task(self._read(), name="firehose reader")
        try:
            await self._loop()
            if self._until_live or self._ended:
                await self._finish_resyncs()
            await self._flush(force=True)
            await self._written()
        finally:
            reader.cancel()
            if self._head is not None:
                self._head.cancel()
                self._head.add_done_callback(_retrieved)
            with contextlib.suppress(asyncio.CancelledError):
                await reader
            for task in [*self._looking_up.values(), *self._fresh.values()]:
                task.cancel()
            self._drop_queued()
            if self._writing is not None:  # failing: the write in flight ends (or fails) first
                with contextlib.suppress(BaseException):
                    await self._writing
            await self.resyncer.close()
            await self._decoder.close()

    # -- reading ----------------------------------------------------------------------

    async def _read(self) -> None:
        if self._feed is not None:
            await self._read_feed(self._feed)
            return
        async for message in resubscribing(
            self._subscribe,
            self._url,
            lambda: self._read_cursor,
            dropped=self._dropped,
            session=self._session,
            allow_private_network=self._allow_private,
            max_frame_bytes=RECEIVE_LIMIT,
        ):
            self._received(message)
            if len(self._chunk) >= CHUNK_FRAMES:
                await self._queue.put(self._submit())

    async def _read_feed(self, feed: Feed) -> None:
        async for messages, through in feed:
            for message in messages:
                self._received(message)
                if len(self._chunk) >= CHUNK_FRAMES:
                    await self._queue.put(self._submit())
            if self._chunk:
                await self._queue.put(self._submit())
            await self._queue.put(_Through(through))
        await self._queue.put(_End())

    def _received(self, message: bytes) -> None:
        """Keep the seq to reconnect after, start the identity look-up the event needs,
        and add the message to the chunk being gathered."""
        counters = self.counters
        counters.received += 1
        counters.bytes += len(message)
        kind, seq, did = peek(message)
        if seq is not None:
            self._read_cursor = seq
        if did is not None and self.applier.wants(did):
            self._chunk_dids.add(did)
            if kind == "#identity" and seq is not None:
                self._prefetch_fresh(did, seq)
            else:
                self._prefetch_identity(did)
        self._chunk.append(message)

    def _submit(self) -> asyncio.Task[list[Decoded]]:
        """Hand the messages gathered so far to the decode stage (once the keys it will
        verify them with are resolved, if it verifies)."""
        chunk, self._chunk = self._chunk, []
        dids, self._chunk_dids = self._chunk_dids, set()
        return asyncio.create_task(self._decode(chunk, dids))

    async def _decode(self, chunk: list[bytes], dids: set[str]) -> list[Decoded]:
        keys: dict[str, str] = {}
        if self._decoder.wants_keys:
            waits = [t for d in dids if (t := self._looking_up.get(d)) is not None]
            if waits:
                await asyncio.wait(waits, timeout=KEY_WAIT_SECONDS)
            for did in dids:
                identity = self._resolver.cached(did)
                if identity is not None and identity.signing_key is not None:
                    keys[did] = identity.signing_key
        return await self._decoder.decode(chunk, keys)

    def _dropped(self, exc: StreamClosed | StreamUnavailable) -> None:
        self._read_cursor = after_drop(exc, self._url, self._read_cursor, self.counters)

    def _prefetch_identity(self, did: str) -> None:
        if self._resolver.knows(did):  # most events are of repos seen before: no task
            return

        async def resolve() -> None:
            async with self._resolving:
                with contextlib.suppress(Exception):  # the applier asks again and decides
                    await self._resolver.resolve(did)

        self._track(did, asyncio.create_task(resolve()))

    def _prefetch_fresh(self, did: str, seq: int) -> None:
        """An `#identity` event: its DID document is read again (it changed) while the
        events before it are applied; the applier takes the answer at its seq."""

        async def resolve() -> Identity:
            async with self._resolving:
                return await self._resolver.resolve(did, fresh=True)

        task = asyncio.create_task(resolve())
        task.add_done_callback(_retrieved)
        self._fresh[seq] = task
        self._track(did, task)

    def _track(self, did: str, task: asyncio.Task) -> None:
        """A look-up in flight, which a chunk naming `did` waits for before it is decoded."""
        self._looking_up[did] = task

        def done(_: asyncio.Task) -> None:
            if self._looking_up.get(did) is task:
                del self._looking_up[did]

        task.add_done_callback(done)

    async def _fresh_identity(self, frame: IdentityFrame) -> Identity:
        task = self._fresh.pop(frame.seq, None)
        if task is None:  # not read by this run's reader (e.g. held back): ask now
            return await self._resolver.resolve(frame.did, fresh=True)
        return await task

    async def _deliver(self, snap: Snapshot) -> None:
        await self._queue.put(_Snapshot(snap))

    # -- applying ---------------------------------------------------------------------

    async def _loop(self) -> None:
        while not self._stop.is_set():
            if self._deadline is not None and time.monotonic() >= self._deadline:
                return
            if self._chunk and self._queue.empty():
                self._queue.put_nowait(self._submit())  # a quiet stream: no full chunk
            timeout = max(0.01, self._flush_seconds - (time.monotonic() - self._batch_started))
            try:
                async with asyncio.timeout(min(timeout, IDLE_SECONDS)):
                    item = await self._queue.get()
            except TimeoutError:
                if self._chunk:
                    continue
                await self._flush()
                if self._until_live and await self._caught_up(idle=True):
                    return
                continue
            if isinstance(item, _Snapshot):
                await self._handle_snapshot(item)
            elif isinstance(item, _Through):
                self._through(item.seq)
            elif isinstance(item, _End):
                self._ended = True
                return
            else:
                ready = self.applier.apply_ready
                for frame, pre in await item:
                    changes = None if self._outdated else ready(frame, pre)
                    if changes is None:
                        await self._handle(frame, pre)
                    else:  # a verified commit (most events): no coroutine for it
                        self._changes.extend(changes)
                        self._advance(frame.seq, frame.time)  # type: ignore[union-attr]
            if (
                self._events_in_batch >= self._batch_size
                or time.monotonic() - self._batch_started >= self._flush_seconds
            ):
                await self._flush()
            if self._until_live and await self._caught_up(idle=False):
                return

    async def _handle_snapshot(self, item: _Snapshot) -> None:
        changes = await self.applier.snapshot(
            item.snap, self._pending_seq or self.counters.cursor or 0, self._pending_time or ""
        )
        if item.snap.error is not None and item.snap.error.retryable:
            self.resyncer.retry_later(item.snap.did)
        self._changes.extend(changes)

    async def _handle(self, frame: Frame | FrameError, pre: Precheck | None) -> None:
        counters = self.counters
        if isinstance(frame, FrameError):
            counters.malformed += 1
            log.warning(
                "malformed frame%s skipped: %s",
                "" if frame.seq is None else f" (seq {frame.seq})",
                frame,
                extra={"event": "frame_malformed", "seq": frame.seq},
            )
            if frame.seq is not None:
                self._advance(frame.seq, None)
            return
        if isinstance(frame, ErrorFrame):
            raise StreamStopped(refusal_line(frame, self._url, self._read_cursor))
        if isinstance(frame, InfoFrame):
            self._info(frame)
            return
        if isinstance(frame, UnknownFrame):
            counters.skipped += 1
            if frame.seq is not None:
                self._advance(frame.seq, None)
            return
        if self._outdated:
            self._outdated = False
            log.warning(
                gap_line(self._url, counters.cursor, frame.seq, frame.time),
                extra={"event": "cursor_outdated"},
            )
        self._changes.extend(await self.applier.apply(frame, pre))
        if isinstance(frame, IdentityFrame):  # not taken when skipped (a replay, filtered)
            leftover = self._fresh.pop(frame.seq, None)
            if leftover is not None:
                leftover.cancel()
        self._advance(frame.seq, frame.time)

    def _advance(self, seq: int, when: str | None) -> None:
        self._pending_seq = seq
        self._pending_time = when or self._pending_time
        self._events_in_batch += 1
        self.counters.seq = seq
        if when:
            self.counters.event_time = when
        if self.counters.head is None or seq > self.counters.head:
            self.counters.head = seq

    def _through(self, seq: int) -> None:
        """The router's tick: the events up to `seq` that are not this shard's are the
        other shards' to apply, so the cursor may pass them."""
        floor = max(c for c in (self._pending_seq, self.counters.cursor, -1) if c is not None)
        if seq > floor:
            self._pending_seq = seq
            self.counters.seq = seq

    def _info(self, frame: InfoFrame) -> None:
        if frame.name == "OutdatedCursor":
            self._outdated = True  # said with the first event after it (the range is known)
        else:
            log.info("host info %s: %s", frame.name, frame.message, extra={"event": "info"})

    async def _flush(self, force: bool = False) -> None:
        """Hand the batch to the writer (once the one before it is written) and go on."""
        seq, when = self._pending_seq, self._pending_time
        if seq is None and self._changes:  # snapshots before any event (an index partition)
            seq = self.counters.cursor or 0
        if seq is None or (not force and not self._changes and seq == self.counters.cursor):
            self._batch_started = time.monotonic()
            return
        if not force and self._writer_busy():
            return  # the batch grows meanwhile (group commit), instead of the stream waiting
        batch = ChangeBatch(self._source, seq, self._changes)
        self._changes, self._events_in_batch = [], 0
        await self._written()
        dirty = self._book.take_dirty()
        self._writing = asyncio.create_task(self._write(batch, seq, when, dirty))
        self._batch_started = time.monotonic()
        if self._batch_delay:
            await asyncio.sleep(self._batch_delay)
        await self._memory_throttle()

    def _writer_busy(self) -> bool:
        """Whether the batch before is still being written and this one may still grow
        (up to GROUP_BATCHES times --batch-size; never with --batch-delay, which asks
        for small, spaced transactions)."""
        writing = self._writing
        return (
            writing is not None
            and not writing.done()
            and not self._batch_delay
            and self._events_in_batch < self._batch_size * GROUP_BATCHES
        )

    async def _write(self, batch: ChangeBatch, seq: int, when: str | None, dirty: list) -> None:
        await asyncio.to_thread(self._sink.apply, batch)
        await asyncio.to_thread(self._state.save, self._source, seq, when, dirty, self._stats())
        self.counters.cursor = seq
        self.counters.batches += 1

    async def _written(self) -> None:
        """Wait for the batch being written (raising its error, if it failed)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    async def _memory_throttle(self) -> None:
        limit = self._memory.limit
        if limit is None or self._memory.rss() <= limit:
            return
        log.info("memory over %d bytes: reading paused", limit, extra={"event": "memory_pause"})
        while self._memory.rss() > limit and not self._stop.is_set():
            gc.collect()
            await asyncio.sleep(0.5)

    # -- live -------------------------------------------------------------------------

    async def _caught_up(self, *, idle: bool) -> bool:
        """With --until-live: reached the head probed at the start, and then the head
        probed again there (or nothing more came for a while)."""
        if self._head is not None:
            if not self._head.done():
                return False
            head, self._head = self._head.result(), None
            self.counters.head = max(head, self.counters.head or 0)
            if self._start is not None and self._start >= head:
                self.counters.live = True  # nothing to replay: live already
                return True
            self._target = head
        seq = self.counters.seq
        if self._target is None:
            return self._stop.is_set() or idle
        if seq is None or seq < self._target:
            return False
        if not self._reprobed:
            self._reprobed = True
            self._target = await head_from(self._probe, seq)
            self.counters.head = max(self._target, seq)
            if seq < self._target:
                return False
        self.counters.live = True
        return True

    def _drop_queued(self) -> None:
        """Chunks read but not applied (stopping): their cursor was not saved, the next
        run reads them again."""
        while not self._queue.empty():
            item = self._queue.get_nowait()
            if isinstance(item, asyncio.Task):
                item.cancel()
                item.add_done_callback(_retrieved)

    async def _finish_resyncs(self) -> None:
        """Wait for the re-fetches in flight and apply what they bring."""
        while self.resyncer.in_flight or not self._queue.empty():
            if self._queue.empty():
                await asyncio.sleep(0.05)
                continue
            item = self._queue.get_nowait()
            if isinstance(item, _Snapshot):
                await self._handle_snapshot(item)
            # frames read past the head stay for the next run (the cursor does not pass them)


def after_drop(
    exc: StreamClosed | StreamUnavailable, url: str, cursor: int | None, counters: StreamCounters
) -> int | None:
    """A dropped connection, said and counted; the cursor to reconnect after (past a frame
    too large to receive, which is skipped)."""
    counters.reconnects += 1
    if isinstance(exc, StreamClosed) and exc.code == MESSAGE_TOO_BIG and cursor is not None:
        log.warning(
            "a frame after seq %s is larger than %d bytes: skipped",
            cursor,
            RECEIVE_LIMIT,
            extra={"event": "frame_malformed", "seq": cursor + 1},
        )
        counters.malformed += 1
        return cursor + 1
    log.warning(
        "stream from %s dropped (%s); reconnecting after seq %s",
        url,
        exc,
        cursor,
        extra={"event": "stream_reconnect"},
    )
    return cursor


def _retrieved(task: asyncio.Task) -> None:
    """Mark a look-up's failure as seen (the applier, if it asks, gets it again)."""
    if not task.cancelled():
        task.exception()

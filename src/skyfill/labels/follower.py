"""One labeler followed: its `subscribeLabels` stream read from a cursor, each label
checked (`checker.py`) and written to the sink in batches with the cursor they cover,
reconnecting after a dropped connection.

A reader task reads messages (reconnecting with backoff after the last seq read) into a
bounded queue; the follower decodes and checks them in seq order and writes a batch
every `batch_size` labels or `flush_seconds`: the sink's transaction (rows and cursor),
then the state's cursor, one write at a time while the next batch is read. With
`until_live` it probes the labeler's head first and stops once it has read it, and one
probe after that finds nothing newer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import aiohttp

from skyfill.atproto.labels import Label, LabelsFrame, decode_labels_frame
from skyfill.atproto.stream.client import SUBSCRIBE_LABELS, resubscribing, subscribe
from skyfill.atproto.stream.exceptions import StreamClosed, StreamUnavailable
from skyfill.atproto.stream.frames import ErrorFrame, FrameError, InfoFrame, peek
from skyfill.atproto.stream.probe import find_head, head_from, probe_with
from skyfill.errors import TransientError
from skyfill.labels.checker import LabelChecker, Refusal
from skyfill.labels.errors import LabelsStopped, refusal_line
from skyfill.labels.state import LabelStateStore
from skyfill.labels.stats import LabelCounters
from skyfill.sinks.labels import LabelBatch, LabelRow, LabelSink

log = logging.getLogger(__name__)

QUEUE_MESSAGES = 1024
"""Messages read ahead of the one being checked."""
IDLE_SECONDS = 0.05
"""How long the follower waits for a message before it looks at the clock."""
QUIET_SECONDS = 2.0
"""With until_live: this long without a message short of the head, the head is probed
again (the label at the probed head may have been replaced by a newer one)."""
BACKOFF_MAX = 30.0
MESSAGE_TOO_BIG = 1009


@dataclass(frozen=True, slots=True)
class _Failed:
    error: BaseException


class LabelFollower:
    def __init__(
        self,
        *,
        url: str,
        sink: LabelSink,
        state: LabelStateStore,
        checker: LabelChecker,
        counters: LabelCounters,
        session: aiohttp.ClientSession,
        allow_private_network: bool,
        until_live: bool,
        batch_size: int = 500,
        flush_seconds: float = 2.0,
        stats: Callable[[], dict] | None = None,
        subscribe: Callable[..., AsyncIterator[bytes]] = subscribe,
    ) -> None:
        self.url = url
        self._subscribe = subscribe
        self._sink = sink
        self._state = state
        self._checker = checker
        self.counters = counters
        self._session = session
        self._allow_private = allow_private_network
        self._until_live = until_live
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._stats = stats
        self._probe = probe_with(
            subscribe,
            url,
            session=session,
            allow_private_network=allow_private_network,
            method=SUBSCRIBE_LABELS,
        )
        self._queue: asyncio.Queue[bytes | _Failed] = asyncio.Queue(QUEUE_MESSAGES)
        self._stop = asyncio.Event()
        self._rows: list[LabelRow] = []
        self._start = 0
        self._pending: int | None = None
        """The seq the next batch covers (its cursor): that of the last frame handled."""
        self._flushed: int | None = None
        self._batch_started = time.monotonic()
        self._last_message = time.monotonic()
        self._read_cursor: int | None = None
        self._writing: asyncio.Task[None] | None = None
        self._reader: asyncio.Task[None] | None = None
        self._target: int | None = None
        self._reprobed = False

    def stop(self) -> None:
        """Finish the current batch, save the cursor and return."""
        self._stop.set()

    async def run(self, start: int) -> None:
        """Follow the labeler from after `start` until stopped (or live, with until_live)."""
        self._start = self._read_cursor = self._flushed = start
        self.counters.cursor = start
        if self._until_live:
            self._target = await find_head(self._probe)
            self.counters.head = self._target
            if start > self._target:  # as the labeler would say when asked for it
                future = ErrorFrame("FutureCursor", f"its newest seq is {self._target}")
                raise LabelsStopped(refusal_line(future, self.url, start))
            if start == self._target:
                self.counters.live = True
                return
        self._reader = asyncio.create_task(self._read(), name=f"labels reader {self.url}")
        try:
            await self._loop()
            await self._flush()
            await self._written()
        finally:
            if self._reader is not None:
                await _cancelled(self._reader)
            if self._writing is not None:  # failing: the write in flight ends (or fails) first
                with contextlib.suppress(BaseException):
                    await self._writing

    # -- reading ----------------------------------------------------------------------

    async def _read(self) -> None:
        try:
            async for message in resubscribing(
                self._subscribe,
                self.url,
                lambda: self._read_cursor,
                dropped=self._dropped,
                backoff_max=BACKOFF_MAX,
                session=self._session,
                allow_private_network=self._allow_private,
                method=SUBSCRIBE_LABELS,
            ):
                seq = peek(message)[1]
                if seq is not None:
                    self._read_cursor = seq
                await self._queue.put(message)
        except Exception as exc:  # e.g. the private-network guard: the follower raises it
            await self._queue.put(_Failed(exc))

    def _dropped(self, exc: StreamClosed | StreamUnavailable) -> None:
        self.counters.reconnects += 1
        cursor = self._read_cursor
        if isinstance(exc, StreamClosed) and exc.code == MESSAGE_TOO_BIG and cursor is not None:
            log.warning(
                "labeler %s: a frame after seq %s is too large: skipped",
                self.url,
                cursor,
                extra={"event": "frame_malformed", "labeler": self.url, "seq": cursor + 1},
            )
            self.counters.malformed += 1
            self._read_cursor = cursor + 1
            return
        log.warning(
            "labeler %s dropped the stream (%s); reconnecting after seq %s",
            self.url,
            exc,
            cursor,
            extra={"event": "stream_reconnect", "labeler": self.url},
        )

    # -- following --------------------------------------------------------------------

    async def _loop(self) -> None:
        backoff = 1.0
        while not self._stop.is_set():
            try:
                async with asyncio.timeout(IDLE_SECONDS):
                    item = await self._queue.get()
            except TimeoutError:
                if time.monotonic() - self._batch_started >= self._flush_seconds:
                    await self._flush()
                if self._until_live and await self._caught_up(idle=True):
                    return
                continue
            if isinstance(item, _Failed):
                raise item.error
            self._last_message = time.monotonic()
            try:
                await self._handle(item)
                backoff = 1.0
            except TransientError as exc:  # the labeler's DID document cannot be read now
                await self._read_again(exc, backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            if (
                len(self._rows) >= self._batch_size
                or time.monotonic() - self._batch_started >= self._flush_seconds
            ):
                await self._flush()
            if self._until_live and await self._caught_up(idle=False):
                return

    async def _handle(self, message: bytes) -> None:
        counters = self.counters
        counters.frames += 1
        try:
            frame = decode_labels_frame(message)
        except FrameError as exc:
            counters.malformed += 1
            log.warning(
                "labeler %s: malformed frame%s skipped: %s",
                self.url,
                "" if exc.seq is None else f" (seq {exc.seq})",
                exc,
                extra={"event": "frame_malformed", "labeler": self.url, "seq": exc.seq},
            )
            if exc.seq is not None:
                self._advance(exc.seq)
            return
        if isinstance(frame, ErrorFrame):
            raise LabelsStopped(refusal_line(frame, self.url, self._read_cursor))
        if isinstance(frame, InfoFrame):
            log.info(
                "labeler %s: %s %s",
                self.url,
                frame.name,
                frame.message or "",
                extra={"event": "info", "labeler": self.url},
            )
            return
        if not isinstance(frame, LabelsFrame):
            counters.skipped += 1
            if frame.seq is not None:
                self._advance(frame.seq)
            return
        await self._labels(frame)
        self._advance(frame.seq)

    async def _labels(self, frame: LabelsFrame) -> None:
        checked = []
        for label in frame.labels:  # all checked before any is kept: a retry reads them again
            checked.append((label, await self._checker.check(label)))
        counters = self.counters
        counters.labels_received += len(frame.labels) + len(frame.invalid)
        counters.did = self._checker.did
        counters.key_refreshes = self._checker.refreshes
        for reason in frame.invalid:
            self._refused(frame.seq, Refusal("malformed", reason))
        for idx, (label, refusal) in enumerate(checked):
            if refusal is not None:
                self._refused(frame.seq, refusal)
                continue
            self._rows.append(_row(frame.seq, idx, label))

    def _refused(self, seq: int, refusal: Refusal) -> None:
        self.counters.labels_refused += 1
        log.warning(
            "labeler %s: label at seq %d refused (%s): %s",
            self.url,
            seq,
            refusal.kind,
            refusal.message,
            extra={
                "event": "label_refused",
                "labeler": self.url,
                "seq": seq,
                "reason": refusal.kind,
            },
        )

    def _advance(self, seq: int) -> None:
        """The frame at `seq` is handled: the batch's cursor moves there (never back)."""
        floor = self._pending if self._pending is not None else self._start
        self._pending = max(seq, floor)
        self.counters.seq = seq
        if self.counters.head is None or seq > self.counters.head:
            self.counters.head = seq

    async def _read_again(self, exc: TransientError, backoff: float) -> None:
        """A label could not be checked now: what came before it is written, and the
        stream is read again from there after `backoff` seconds."""
        await self._flush()
        if self._reader is not None:
            await _cancelled(self._reader)
        while not self._queue.empty():
            self._queue.get_nowait()
        after = self._pending if self._pending is not None else self.counters.cursor
        self._read_cursor = after
        log.warning(
            "labeler %s: %s; reading again after seq %s in %.0f s",
            self.url,
            exc,
            after,
            backoff,
            extra={"event": "label_check_retry", "labeler": self.url},
        )
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(backoff):
                await self._stop.wait()
        self._reader = asyncio.create_task(self._read(), name=f"labels reader {self.url}")

    async def _flush(self) -> None:
        """Hand the batch to the writer (once the one before it is written) and go on."""
        self._batch_started = time.monotonic()
        seq = self._pending
        if seq is None or (not self._rows and seq == self._flushed):
            return
        batch = LabelBatch(self.url, seq, self._rows)
        self._rows, self._flushed = [], seq
        await self._written()
        self._writing = asyncio.create_task(self._write(batch))

    async def _write(self, batch: LabelBatch) -> None:
        written = await asyncio.to_thread(self._sink.apply, batch)
        await asyncio.to_thread(self._state.save, self.url, batch.cursor)
        self.counters.cursor = batch.cursor
        self.counters.labels_applied += written
        if self._stats is not None:
            await asyncio.to_thread(self._state.put_meta, "stats", self._stats())

    async def _written(self) -> None:
        """Wait for the batch being written (raising its error, if it failed)."""
        writing, self._writing = self._writing, None
        if writing is not None:
            await writing

    # -- live -------------------------------------------------------------------------

    async def _caught_up(self, *, idle: bool) -> bool:
        """Read the head probed at the start, and one probe after it finds no newer one
        (or, quiet short of it, a new probe says the head is behind)."""
        seq = self.counters.seq if self.counters.seq is not None else self.counters.cursor
        assert self._target is not None and seq is not None
        if seq < self._target:
            if not idle or time.monotonic() - self._last_message < QUIET_SECONDS:
                return False
            self._last_message = time.monotonic()
            self._target = await find_head(self._probe)
            self.counters.head = max(self._target, seq)
            return seq >= self._target and self._live()
        if not self._reprobed:
            self._reprobed = True
            self._target = await head_from(self._probe, seq)
            self.counters.head = max(self._target, seq)
            if seq < self._target:
                return False
        return self._live()

    def _live(self) -> bool:
        self.counters.live = True
        return True


def _row(seq: int, idx: int, label: Label) -> LabelRow:
    return LabelRow(seq, label.src, label.uri, label.cid, label.val, label.neg, label.cts,
                    label.exp, label.sig, label.ver, idx)  # fmt: skip


async def _cancelled(task: asyncio.Task) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task

"""`skyfill firehose --shards N`: one stream split by DID over N processes.

The router (the command's process) reads the host's stream, reads each message's DID
(`frames.peek`) and hands the message to the shard that owns the DID (crc32 mod N). Each
shard is a process (`shard_main.py`) that runs the stream's consumer over its feed:
decode, verify, apply and write, with a state of its own (`<stream dir>/shard-K/`) and a
cursor of its own in the sink (source `host:port#K/N`). A repo's events all go to one
shard, in order, so the rules per repo hold as in one process.

Cursors: with every chunk the router tells a shard the seq it has routed through, so a
shard's cursor moves past the events of the others (a quiet shard does not hold the
stream back). A restart reads from the oldest of the shards' cursors and gives each shard
only what is past its own; a shard with none starts where the stream first started (its
`origin`, kept in the stream's state). The shard count is kept too: a stream resumes
with the number it started with.

The router keeps what is the stream's: the connection and its reconnects, `--until-live`
(the head probed, then probed again once reached), `--duration`, signals, progress,
metrics, `--labels`. It ends the shards by closing their feeds (caught up: they apply what
they hold and finish their re-fetches) or by SIGTERM (stopped: they save what they have
applied). A shard that fails stops the stream, with its one line.

The wire: to a shard's stdin, `<u32 size><i64 through>` then `size` bytes of messages,
each `<u32 length><bytes>`; from its stdout, JSON lines (`shard_main._report`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import struct
import zlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from typing import Any

import orjson

from skyfill.atproto.stream.client import StreamClosed, StreamUnavailable, resubscribing, subscribe
from skyfill.atproto.stream.frames import peek
from skyfill.errors import UsageError
from skyfill.firehose.config import FirehoseConfig
from skyfill.firehose.consumer import RECEIVE_LIMIT, after_drop
from skyfill.firehose.errors import StreamStopped
from skyfill.firehose.progress import serve_metrics, showing, summary_line
from skyfill.firehose.run import (
    StreamDir,
    chosen_start,
    following_labels,
    source_key,
    stopped_by_signals,
    stream_clients,
    stream_probe,
    write_manifest,
)
from skyfill.firehose.state import StreamState
from skyfill.firehose.stats import StreamCounters
from skyfill.firehose.window import find_head, head_from
from skyfill.ratelimit.memory_gate import MemoryGate
from skyfill.sinks.factory import open_stream_sink

log = logging.getLogger(__name__)

CHUNK_FRAMES = 256
"""Messages a shard is sent at once (fewer when the stream is quiet)."""
IDLE_SECONDS = 0.05
"""How long the router holds a partial chunk while no message comes."""
SAVE_SECONDS = 2.0
"""How often the stream's facts are saved for `skyfill status` while it runs."""
STOP_SECONDS = 60.0
"""How long stopped shards have to save what they applied before they are killed."""
HEADER = struct.Struct("<Iq")
LENGTH = struct.Struct("<I")
SUMMED = (
    "applied", "skipped", "malformed", "ops", "desynchronized", "resynced", "resync_failed",
    "no_prev_data", "proofs_verified", "signatures_verified", "held", "batches",
    "desynchronized_repos", "repos_known", "held_bytes",
)  # fmt: skip
"""The shards' facts that add up to the stream's."""


def shard_of(did: str, shards: int) -> int:
    return zlib.crc32(did.encode()) % shards


def shard_source(source: str, index: int, shards: int) -> str:
    """A shard's cursor key in the sink and its state: `host:port#K/N`."""
    return f"{source}#{index}/{shards}"


async def read_feed(reader: asyncio.StreamReader) -> AsyncIterator[tuple[list[bytes], int]]:
    """A shard's side of the wire: each frame's messages and the seq routed through; ends
    at EOF."""
    while True:
        try:
            head = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError:
            return
        size, through = HEADER.unpack(head)
        blob = await reader.readexactly(size)
        messages, at = [], 0
        while at < size:
            (length,) = LENGTH.unpack_from(blob, at)
            messages.append(blob[at + 4 : at + 4 + length])
            at += 4 + length
        yield messages, through


class ShardFailed(StreamStopped):
    """A shard of a split stream stopped on its own: its one line says why."""

    error_class = "shard_failed"


@dataclass(slots=True)
class Forked:
    """A shard process as forked, before the router's event loop: its PID and the
    router's ends of its two pipes."""

    index: int
    pid: int
    feed_fd: int
    report_fd: int
    status: int | None = None
    """Its exit code once reaped (negative: the signal that ended it)."""

    def reap(self) -> int | None:
        """Wait for it to exit; its exit code (kept: a process is reaped once)."""
        if self.status is None:
            with contextlib.suppress(ChildProcessError):
                _, code = os.waitpid(self.pid, 0)
                self.status = os.waitstatus_to_exitcode(code)
        return self.status


def fork_shards(config: FirehoseConfig, where: StreamDir) -> list[Forked]:
    """Fork the stream's shards, each waiting for its feed to say go. Forked before the
    event loop (one thread, nothing of it to inherit) and before the stream's lock (a
    shard must not hold it after the router is gone)."""
    from skyfill.firehose.shard_main import ShardOrders, serve

    count = config.shards or 1
    shard_config = replace(  # a shard decodes in its own process unless told otherwise
        config,
        shards=1,
        until_live=False,
        duration=None,
        labels=[],
        decode_workers=config.decode_workers or 0,
    )
    memory = None if config.max_memory is None else config.max_memory // count
    pipes = [(os.pipe(), os.pipe()) for _ in range(count)]
    forked = []
    router = os.getpid()
    for index in range(count):
        (feed_r, feed_w), (report_r, report_w) = pipes[index]
        pid = os.fork()
        if pid == 0:  # the shard: never returns
            code = 1
            try:
                for (a, b), (c, d) in pipes:
                    for fd in (a, b, c, d):
                        if fd not in (feed_r, report_w):
                            os.close(fd)
                orders = ShardOrders(
                    shard_config, index, count, where.shard(index).root, memory, router
                )
                code = serve(orders, feed_r, report_w)
            finally:
                os._exit(code)
        forked.append(Forked(index, pid, feed_w, report_r))
    for (feed_r, _), (_, report_w) in pipes:
        os.close(feed_r)
        os.close(report_w)
    return forked


def release(forked: list[Forked]) -> None:
    """Shards never told to go (the stream was busy, or setting up failed): their feeds
    end, so they exit; all are reaped."""
    for shard in forked:
        for fd in (shard.feed_fd, shard.report_fd):
            if fd >= 0:  # not handed to the router's loop
                os.close(fd)
        shard.feed_fd = shard.report_fd = -1
    for shard in forked:
        shard.reap()


async def pipe_reader(fd: int) -> asyncio.StreamReader:
    """A StreamReader over the read end of a pipe."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    pipe = os.fdopen(fd, "rb", buffering=0)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


async def _pipe_writer(fd: int) -> asyncio.StreamWriter:
    loop = asyncio.get_running_loop()
    pipe = os.fdopen(fd, "wb", buffering=0)
    transport, protocol = await loop.connect_write_pipe(
        lambda: asyncio.StreamReaderProtocol(asyncio.StreamReader()), pipe
    )
    return asyncio.StreamWriter(transport, protocol, None, loop)


class _Shard:
    """One shard process, as the router sees it."""

    def __init__(self, forked: Forked) -> None:
        self.forked = forked
        self.index = forked.index
        self.saved: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.facts: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.error: str | None = None
        self.stopped = False
        """Its error is the host's refusal (a StreamStopped), not a failure of its own."""
        self.buffer: list[bytes] = []
        self.feed: asyncio.StreamWriter | None = None
        self.listening: asyncio.Task[None] | None = None
        self.ended: asyncio.Task[int | None] | None = None

    @property
    def running(self) -> bool:
        return self.forked.status is None

    async def open(self) -> None:
        """Its pipes on the loop, and the go frame: the stream's lock is held."""
        forked = self.forked
        self.feed = await _pipe_writer(forked.feed_fd)
        forked.feed_fd = -1  # the transport's to close now
        reports = await pipe_reader(forked.report_fd)
        forked.report_fd = -1
        self.listening = asyncio.create_task(self._listen(reports), name=f"shard {self.index}")
        self.ended = asyncio.create_task(self._exited(), name=f"shard {self.index} exit")
        self.feed.write(HEADER.pack(0, -1))

    async def _listen(self, reports: asyncio.StreamReader) -> None:
        while line := await reports.readline():
            try:
                report = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue
            if "saved" in report and not self.saved.done():
                self.saved.set_result(report["saved"])
            elif "facts" in report:
                self.facts = report["facts"]
            elif "done" in report:
                self.final = self.facts = report["done"]
            elif "error" in report:
                self.error, self.stopped = report["error"], bool(report.get("stopped"))
        if not self.saved.done():  # it ended before it could start
            if self.ended is not None:
                await asyncio.shield(self.ended)
            self.saved.set_exception(self.failure())
            self.saved.exception()  # seen: the router may have stopped waiting for it

    async def _exited(self) -> int | None:
        """Its exit code, once it has exited (its pidfd says when, where there is one)."""
        try:
            pidfd = os.pidfd_open(self.forked.pid)
        except (AttributeError, OSError):
            return await asyncio.to_thread(self.forked.reap)
        loop = asyncio.get_running_loop()
        gone = loop.create_future()
        loop.add_reader(pidfd, lambda: gone.done() or gone.set_result(None))
        try:
            await gone
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        return self.forked.reap()

    def failure(self) -> StreamStopped:
        if self.error is not None and self.stopped:
            return StreamStopped(self.error)
        code = self.forked.status
        why = self.error or f"exited with {'no code' if code is None else code}"
        return ShardFailed(f"shard {self.index} of the stream stopped: {why}")

    def start(self, seq: int) -> None:
        """The second handshake frame: where it starts."""
        assert self.feed is not None
        self.feed.write(HEADER.pack(0, seq))

    def send(self, through: int) -> None:
        """Write its buffered messages and `through` to its feed (the caller drains)."""
        assert self.feed is not None
        messages, self.buffer = self.buffer, []
        parts = [b""]
        for message in messages:
            parts += (LENGTH.pack(len(message)), message)
        size = sum(map(len, messages)) + LENGTH.size * len(messages)
        parts[0] = HEADER.pack(size, through)
        self.feed.writelines(parts)

    async def drain(self) -> None:
        assert self.feed is not None and self.ended is not None
        try:
            await self.feed.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self.ended
            raise self.failure() from None

    def close_feed(self) -> None:
        if self.feed is not None and not self.feed.is_closing():
            self.feed.close()

    def terminate(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.forked.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self.running:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.forked.pid, signal.SIGKILL)


async def run_sharded(
    config: FirehoseConfig,
    where: StreamDir,
    forked: list[Forked],
    progress: str,
    interval: float,
    metrics_port: int,
) -> dict[str, Any]:
    """Run the stream split over its forked shards until stopped; the summary's facts."""
    source = source_key(config.from_host)
    state = StreamState(where.state)
    try:
        state.put_meta("shards", len(forked))
        sink = open_stream_sink(config.sink, stream_id=config.stream_id, state_dir=where.root)
        try:  # the shards' sinks find their tables made (two at once could race to make them)
            await asyncio.to_thread(sink.check)
            await asyncio.to_thread(sink.cursor, source)  # what makes a SQL sink's tables
            write_manifest(where, config, sink.target)
        finally:
            sink.close()
        async with stream_clients(config) as (stream_session, client):
            probe = stream_probe(config, stream_session)
            router = _Router(config, where, source, stream_session, probe)
            router.shards = [_Shard(f) for f in forked]
            try:
                for shard in router.shards:
                    await shard.open()
                origin = await _origin(config, state, probe)
                return await router.run(origin, state, progress, interval, metrics_port, client)
            finally:  # e.g. the host is not there to find the start: no shard left waiting
                await router.stop_all(finish=False)
    finally:
        state.close()


def shard_count(config: FirehoseConfig, where: StreamDir) -> int:
    """The stream's shard count: --shards, else the count it was run with, else
    `config.default_shards()`; UsageError for --shards other than the count it was run
    with (its cursors and repo facts are per shard)."""
    before = _count_run_with(config, where)
    if config.shards is not None and before is not None and config.shards != before:
        raise UsageError(
            f"stream {config.stream_id} was run with --shards {before}: resume it with "
            f"--shards {before}, or start another --stream-id"
        )
    if config.shards is not None:
        return config.shards
    return before if before is not None else config.default_shards()


def _count_run_with(config: FirehoseConfig, where: StreamDir) -> int | None:
    if not where.state.exists():
        return None
    state = StreamState(where.state)
    try:
        count = state.meta("shards")
        if isinstance(count, int):
            return count
        return 1 if state.cursor(source_key(config.from_host)) is not None else None
    finally:
        state.close()


async def _origin(config: FirehoseConfig, state: StreamState, probe: Any) -> int:
    """Where a shard with no saved cursor starts: where the stream first started (kept),
    else --cursor / --since / the head now (pinned, so that every shard starts there)."""
    kept = None if config.reset_cursor else state.meta("origin")
    if isinstance(kept, int):
        return kept
    start = await chosen_start(config, probe)
    if start is None:
        start = await find_head(probe)
    state.put_meta("origin", start)
    return start


class _Router:
    def __init__(
        self, config: FirehoseConfig, where: StreamDir, source: str, session: Any, probe: Any
    ) -> None:
        self.config = config
        self.where = where
        self.source = source
        self.session = session
        self.probe = probe
        self.counters = StreamCounters()
        self.memory = MemoryGate(None)
        self.shards: list[_Shard] = []
        self.starts: list[int] = []
        self.read_cursor: int | None = None
        self.sent_through: int | None = None
        self.quiet_since = 0
        """Messages received when the idle tick last looked."""
        self.target: int | None = None
        self.reached = asyncio.Event()
        self.done = asyncio.Event()
        self.live = False
        self.stopped = False
        self.finishing = False
        """Live and routed: the shards apply what they hold (a signal now stops them)."""
        self.sending = asyncio.Lock()

    async def run(
        self,
        origin: int,
        state: StreamState,
        progress: str,
        interval: float,
        metrics_port: int,
        client: Any,
    ) -> dict[str, Any]:
        config = self.config
        routed = False
        try:
            saved = await asyncio.gather(*(s.saved for s in self.shards))
            self.starts = [origin if c is None else int(c) for c in saved]
            for shard, seq in zip(self.shards, self.starts, strict=True):
                shard.start(seq)
            start = min(self.starts)
            if any(c is not None for c in saved):
                log.info(
                    "resuming %s after seq %d", config.from_host, start, extra={"event": "resume"}
                )
            self.read_cursor = start
            if metrics_port:
                serve_metrics(self.facts, config.stream_id, metrics_port)
            with stopped_by_signals(self._signalled):
                async with showing(self.facts, progress, interval):  # until shards are done
                    try:
                        async with following_labels(config, self.where, self.session, client):
                            await self._route_until_done(start, state)
                            routed = True
                    finally:
                        await self.stop_all(finish=routed and self.live)
        finally:
            await self.stop_all(finish=False)  # (when not already)
        failed = [s for s in self.shards if s.final is None]
        if failed:
            raise failed[0].failure()
        final = self.facts()
        state.put_stats(final)
        log.info(summary_line(final), extra={"event": "firehose_done", **final})
        return final

    async def _route_until_done(self, start: int, state: StreamState) -> None:
        """Route until caught up (--until-live), out of time, stopped, or a shard fails."""
        tasks = [
            asyncio.create_task(self._route(), name="router"),
            asyncio.create_task(self._tick(), name="router ticks"),
            asyncio.create_task(self._save(state), name="router saves"),
        ]
        if self.config.until_live:
            tasks.append(asyncio.create_task(self._watch_head(start), name="head"))
        ended = [asyncio.ensure_future(asyncio.shield(s.ended)) for s in self.shards if s.ended]
        done = asyncio.create_task(self.done.wait())
        deadline = self.config.duration
        try:
            finished, _ = await asyncio.wait(
                [*tasks, *ended, done], timeout=deadline, return_when=asyncio.FIRST_COMPLETED
            )
            for task in finished:
                if task in tasks and not task.cancelled() and task.exception() is not None:
                    raise task.exception()  # type: ignore[misc]
        finally:
            for task in [*tasks, *ended, done]:
                task.cancel()
            for task in [*tasks, *ended, done]:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self.live:  # every message up to the head goes out before the feeds end
            await self._send_all()

    async def _route(self) -> None:
        count = len(self.shards)
        async for message in resubscribing(
            subscribe,
            self.config.from_host,
            lambda: self.read_cursor,
            dropped=self._dropped,
            session=self.session,
            allow_private_network=self.config.allow_private_network,
            max_frame_bytes=RECEIVE_LIMIT,
        ):
            counters = self.counters
            counters.received += 1
            counters.bytes += len(message)
            _kind, seq, did = peek(message)
            index = 0 if did is None else shard_of(did, count)
            if seq is not None:
                self.read_cursor = counters.seq = seq
                if seq > (counters.head or -1):
                    counters.head = seq
                if self.target is not None and seq >= self.target:
                    self.reached.set()
                if seq <= self.starts[index]:
                    continue  # this shard has applied it already
            shard = self.shards[index]
            shard.buffer.append(message)
            if len(shard.buffer) >= CHUNK_FRAMES:
                await self._send_all()

    async def _send_all(self) -> None:
        """Every shard's buffered messages, and the seq routed through."""
        async with self.sending:
            through = self.read_cursor
            if through is None:
                return
            self.sent_through = through
            for shard in self.shards:
                if shard.running:
                    shard.send(through)
            for shard in self.shards:
                if shard.running:
                    await shard.drain()

    async def _tick(self) -> None:
        """A quiet stream: what is held goes out once IDLE_SECONDS passed without a
        message (and the shards learn the seq read, so their cursors move)."""
        while True:
            await asyncio.sleep(IDLE_SECONDS)
            received, self.quiet_since = self.quiet_since, self.counters.received
            if received != self.counters.received:
                continue
            held = any(shard.buffer for shard in self.shards)
            if held or self.sent_through != self.read_cursor:
                await self._send_all()

    async def _watch_head(self, start: int) -> None:
        """--until-live: reached the head probed at the start, then the head probed again."""
        head = await find_head(self.probe)
        self.counters.head = max(head, self.counters.head or 0)
        if start < head:
            await self._reach(head)
            assert self.read_cursor is not None
            again = await head_from(self.probe, self.read_cursor)
            self.counters.head = max(again, self.counters.head or 0)
            await self._reach(again)
        self.live = self.counters.live = True

    async def _reach(self, seq: int) -> None:
        self.target = seq
        self.reached.clear()
        if self.read_cursor is not None and self.read_cursor >= seq:
            return
        await self.reached.wait()

    def _dropped(self, exc: StreamClosed | StreamUnavailable) -> None:
        self.read_cursor = after_drop(exc, self.config.from_host, self.read_cursor, self.counters)

    async def _save(self, state: StreamState) -> None:
        while True:
            await asyncio.sleep(SAVE_SECONDS)
            state.put_stats(self.facts())

    def _signalled(self) -> None:
        """SIGTERM or SIGINT: routing stops; shards finishing (live) are stopped too."""
        self.done.set()
        if self.finishing:
            for shard in self.shards:
                shard.terminate()

    async def stop_all(self, *, finish: bool) -> None:
        """`finish` (live, all sent): the feeds end, and the shards apply what they hold
        and finish their re-fetches. Else (stopped, out of time, a shard or the router
        failed): SIGTERM, they save what they have applied, within STOP_SECONDS or are
        killed. Then they are reaped. Once."""
        if self.stopped:
            return
        self.stopped = True
        self.finishing = finish
        for shard in self.shards:
            if finish:
                shard.close_feed()
            else:
                shard.terminate()
        ended = [s.ended for s in self.shards if s.ended is not None]
        try:
            async with asyncio.timeout(None if finish else STOP_SECONDS):
                await asyncio.gather(*ended)
        except TimeoutError:
            for shard in self.shards:
                shard.kill()
            await asyncio.gather(*ended)
        for shard in self.shards:
            shard.close_feed()
            if shard.listening is not None:
                await shard.listening

    def facts(self) -> dict[str, Any]:
        """The stream's facts: what the router read, and the shards' facts added up (its
        cursor the oldest shard's, its event time the newest)."""
        reports = [s.facts for s in self.shards]
        times: list[str] = [t for r in reports if (t := r.get("event_time"))]
        counters = self.counters
        counters.event_time = max(times) if times else None  # (so the lag is the stream's)
        data = counters.snapshot(self.memory.rss())  # the router's memory and its shards'
        for name in SUMMED:
            data[name] = sum(r.get(name) or 0 for r in reports) + (data.get(name) or 0)
        cursors = [c for r in reports if (c := r.get("cursor")) is not None]
        data["cursor"] = min(cursors) if len(cursors) == len(reports) and cursors else None
        data.update(
            stream_id=self.config.stream_id,
            source=self.source,
            shards=len(self.shards),
            live=self.live,
        )
        return data

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
import sys
import time
import zlib
from collections.abc import AsyncIterator
from dataclasses import replace
from typing import Any

import orjson

from skyfill.atproto.stream.client import StreamClosed, StreamUnavailable, resubscribing, subscribe
from skyfill.atproto.stream.frames import peek
from skyfill.errors import UsageError
from skyfill.firehose.config import FirehoseConfig
from skyfill.firehose.consumer import MESSAGE_TOO_BIG, RECEIVE_LIMIT
from skyfill.firehose.errors import StreamStopped
from skyfill.firehose.progress import serve_metrics, showing, summary_line
from skyfill.firehose.run import (
    StreamDir,
    chosen_start,
    following_labels,
    source_key,
    stream_clients,
    write_manifest,
)
from skyfill.firehose.state import StreamState
from skyfill.firehose.stats import StreamCounters
from skyfill.firehose.window import find_head, head_from, probe_with
from skyfill.ratelimit.memory_gate import MemoryGate
from skyfill.sinks.factory import open_stream_sink

log = logging.getLogger(__name__)

SHARD_ENV = "SKYFILL_SHARD_ORDERS"
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


async def read_feed(reader: asyncio.StreamReader) -> AsyncIterator[bytes | int]:
    """A shard's side of the wire: each message, then the seq routed through; ends at EOF."""
    while True:
        try:
            head = await reader.readexactly(HEADER.size)
        except asyncio.IncompleteReadError:
            return
        size, through = HEADER.unpack(head)
        blob = await reader.readexactly(size)
        view, at = memoryview(blob), 0
        while at < size:
            (length,) = LENGTH.unpack_from(blob, at)
            yield bytes(view[at + 4 : at + 4 + length])
            at += 4 + length
        yield through


class ShardFailed(StreamStopped):
    """A shard of a split stream stopped on its own: its one line says why."""

    error_class = "shard_failed"


class _Shard:
    """One shard process, as the router sees it."""

    def __init__(self, index: int, process: asyncio.subprocess.Process) -> None:
        self.index = index
        self.process = process
        self.started: asyncio.Future[int | None] = asyncio.get_running_loop().create_future()
        self.facts: dict[str, Any] = {}
        self.final: dict[str, Any] | None = None
        self.error: str | None = None
        self.stopped = False
        """Its error is the host's refusal (a StreamStopped), not a failure of its own."""
        self.buffer: list[bytes] = []
        self.listening = asyncio.create_task(self._listen(), name=f"shard {index} reports")

    async def _listen(self) -> None:
        stdout = self.process.stdout
        assert stdout is not None
        while line := await stdout.readline():
            try:
                report = orjson.loads(line)
            except orjson.JSONDecodeError:
                continue  # not a report (something the shard's libraries printed)
            if "start" in report and not self.started.done():
                self.started.set_result(report["start"])
            elif "facts" in report:
                self.facts = report["facts"]
            elif "done" in report:
                self.final = self.facts = report["done"]
            elif "error" in report:
                self.error, self.stopped = report["error"], bool(report.get("stopped"))
        if not self.started.done():
            self.started.set_exception(self.failure())

    def failure(self) -> StreamStopped:
        if self.error is not None and self.stopped:
            return StreamStopped(self.error)
        code = self.process.returncode
        why = self.error or f"exited with {'no code' if code is None else code}"
        return ShardFailed(f"shard {self.index} of the stream stopped: {why}")

    def send(self, through: int) -> None:
        """Write its buffered messages and `through` to its feed (the caller drains)."""
        stdin = self.process.stdin
        assert stdin is not None
        messages, self.buffer = self.buffer, []
        body = b"".join(LENGTH.pack(len(m)) + m for m in messages)
        stdin.write(HEADER.pack(len(body), through) + body)

    async def drain(self) -> None:
        stdin = self.process.stdin
        assert stdin is not None
        try:
            await stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            await self.process.wait()
            await self.listening
            raise self.failure() from None

    def close_feed(self) -> None:
        stdin = self.process.stdin
        if stdin is not None and not stdin.is_closing():
            stdin.close()

    def terminate(self) -> None:
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)


async def run_sharded(
    config: FirehoseConfig, where: StreamDir, progress: str, interval: float, metrics_port: int
) -> dict[str, Any]:
    """Run the stream split over `config.shards` processes until stopped; the summary's
    facts."""
    source = source_key(config.from_host)
    state = StreamState(where.state)
    try:
        _check_layout(config, state, source)
        sink = open_stream_sink(config.sink, stream_id=config.stream_id, state_dir=where.root)
        try:  # the shards' sinks find their tables made (two at once could race to make them)
            await asyncio.to_thread(sink.check)
            await asyncio.to_thread(sink.cursor, source)  # what makes a SQL sink's tables
            write_manifest(where, config, sink.target)
        finally:
            sink.close()
        async with stream_clients(config) as (stream_session, client):
            probe = probe_with(
                subscribe,
                config.from_host,
                session=stream_session,
                allow_private_network=config.allow_private_network,
            )
            origin = await _origin(config, state, probe)
            router = _Router(config, where, source, stream_session, probe)
            facts = await router.run(origin, state, progress, interval, metrics_port, client)
            return facts
    finally:
        state.close()


def _check_layout(config: FirehoseConfig, state: StreamState, source: str) -> None:
    """A stream keeps its shard count: its cursors and repo facts are per shard."""
    before = state.meta("shards")
    if before is None and state.cursor(source) is not None:
        before = 1  # run in one process before
    if before is not None and before != config.shards:
        raise UsageError(
            f"stream {config.stream_id} was run with --shards {before}: resume it with "
            f"--shards {before}, or start another --stream-id"
        )
    state.put_meta("shards", config.shards)


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
        self.unsent = 0
        self.last_message = time.monotonic()
        self.target: int | None = None
        self.reached = asyncio.Event()
        self.done = asyncio.Event()
        self.live = False
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
        loop = asyncio.get_running_loop()
        try:
            await self._spawn(origin)
            starts = await asyncio.gather(*(s.started for s in self.shards))
            self.starts = [origin if s is None else int(s) for s in starts]
            start = min(self.starts)
            if start != origin or any(s != origin for s in self.starts):
                log.info(
                    "resuming %s after seq %d", config.from_host, start, extra={"event": "resume"}
                )
            self.read_cursor = self.counters.cursor = start
            if metrics_port:
                serve_metrics(self.facts, config.stream_id, metrics_port)
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.done.set)
            try:
                async with (
                    showing(self.facts, progress, interval),
                    following_labels(config, self.where, self.session, client),
                ):
                    await self._route_until_done(start, state)
            finally:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(sig)
        finally:
            await self._stop_all()
        failed = [s for s in self.shards if s.final is None]
        if failed:
            raise failed[0].failure()
        final = self.facts()
        state.put_meta("stats", {**final, "updated_at": time.time()})
        log.info(summary_line(final), extra={"event": "firehose_done", **final})
        return final

    async def _spawn(self, origin: int) -> None:
        config = self.config
        count = config.shards
        per_shard_memory = None if config.max_memory is None else config.max_memory // count
        shard_config = replace(  # a shard decodes in its own process unless told otherwise
            config,
            shards=1,
            until_live=False,
            duration=None,
            labels=[],
            decode_workers=config.decode_workers or 0,
        )
        level = logging.getLevelName(logging.getLogger("skyfill").getEffectiveLevel()).lower()
        for index in range(count):
            orders = {
                "config": shard_config.to_dict(),
                "index": index,
                "shards": count,
                "dir": str(self.where.root / f"shard-{index}"),
                "origin": origin,
                "max_memory": per_shard_memory,
                "log_level": level,
            }
            env = {**os.environ, SHARD_ENV: orjson.dumps(orders).decode()}
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "skyfill.firehose.shard_main",
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                env=env,
            )
            self.shards.append(_Shard(index, process))

    async def _route_until_done(self, start: int, state: StreamState) -> None:
        """Route until caught up (--until-live), out of time, stopped, or a shard fails."""
        tasks = [
            asyncio.create_task(self._route(start), name="router"),
            asyncio.create_task(self._tick(), name="router ticks"),
            asyncio.create_task(self._save(state), name="router saves"),
        ]
        if self.config.until_live:
            tasks.append(asyncio.create_task(self._watch_head(start), name="head"))
        ended = [asyncio.create_task(s.process.wait()) for s in self.shards]
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
        if self.live:  # every message up to the head is in the feeds: let them end
            await self._send_all()
            for shard in self.shards:
                shard.close_feed()

    async def _route(self, start: int) -> None:
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
            self.last_message = time.monotonic()
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
            self.unsent += 1
            if len(shard.buffer) >= CHUNK_FRAMES:
                await self._send_all()

    async def _send_all(self) -> None:
        """Every shard's buffered messages, and the seq routed through."""
        async with self.sending:
            through = self.read_cursor
            if through is None:
                return
            self.unsent, self.sent_through = 0, through
            for shard in self.shards:
                if shard.process.returncode is None:
                    shard.send(through)
            for shard in self.shards:
                if shard.process.returncode is None:
                    await shard.drain()

    async def _tick(self) -> None:
        """A quiet stream: what is held goes out after IDLE_SECONDS without a message."""
        while True:
            await asyncio.sleep(IDLE_SECONDS)
            quiet = time.monotonic() - self.last_message >= IDLE_SECONDS
            if quiet and (self.unsent or self.sent_through != self.read_cursor):
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
        self.counters.reconnects += 1
        cursor = self.read_cursor
        if isinstance(exc, StreamClosed) and exc.code == MESSAGE_TOO_BIG and cursor is not None:
            log.warning(
                "a frame after seq %s is larger than %d bytes: skipped",
                cursor,
                RECEIVE_LIMIT,
                extra={"event": "frame_malformed", "seq": cursor + 1},
            )
            self.counters.malformed += 1
            self.read_cursor = cursor + 1
            return
        log.warning(
            "stream from %s dropped (%s); reconnecting after seq %s",
            self.config.from_host,
            exc,
            cursor,
            extra={"event": "stream_reconnect"},
        )

    async def _save(self, state: StreamState) -> None:
        while True:
            await asyncio.sleep(SAVE_SECONDS)
            state.put_meta("stats", {**self.facts(), "updated_at": time.time()})

    async def _stop_all(self) -> None:
        """Stopped shards save what they applied; ended feeds finish. Then reap them."""
        for shard in self.shards:
            if not self.live:
                shard.terminate()
        waits = [s.process.wait() for s in self.shards]
        try:
            async with asyncio.timeout(STOP_SECONDS if not self.live else None):
                await asyncio.gather(*waits)
        except TimeoutError:
            for shard in self.shards:
                if shard.process.returncode is None:
                    shard.process.kill()
            await asyncio.gather(*(s.process.wait() for s in self.shards))
        for shard in self.shards:
            await shard.listening

    def facts(self) -> dict[str, Any]:
        counters = self.counters
        data = counters.snapshot(None)
        reports = [s.facts for s in self.shards]
        for name in SUMMED:
            data[name] = sum(r.get(name) or 0 for r in reports) + (data.get(name) or 0)
        cursors = [c for r in reports if (c := r.get("cursor")) is not None]
        data["cursor"] = min(cursors) if len(cursors) == len(reports) and cursors else None
        times: list[str] = [t for r in reports if (t := r.get("event_time"))]
        newest = max(times) if times else None
        data["event_time"] = newest
        data["lag_s"] = None if newest is None else _lag(newest)
        data["rss_bytes"] = self.memory.rss()  # the router's and its shards'
        data.update(
            stream_id=self.config.stream_id,
            source=self.source,
            shards=len(self.shards),
            live=self.live,
        )
        return data


def _lag(event_time: str) -> float | None:
    probe = StreamCounters(event_time=event_time)
    return None if (lag := probe.lag_seconds()) is None else round(lag, 3)

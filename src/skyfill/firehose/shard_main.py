"""One shard of a split stream (`skyfill firehose --shards N`): a process the router
(`shards.py`) forks before its event loop starts, so that a shard begins with skyfill
imported. It is given its orders (`ShardOrders`) and two pipes: its feed (the router's
frames, `shards.read_feed`) and its reports (JSON lines, `Reporter`).

It starts with a handshake. The feed's first frame says go (the router holds the
stream's lock by then; a feed that ends first means it does not, and the shard exits
quietly). The shard takes its directory's lock, opens its state and sink, and reports the
cursor it has saved. The second frame's seq is where it starts. Then it runs the stream's
consumer over its feed, with a state of its own (`<stream dir>/shard-K/state.sqlite`) and
its own cursor in the sink (source `host:port#K/N`), and reports its facts every
REPORT_SECONDS, then its final facts or the one line of what stopped it.

SIGTERM and SIGINT stop it as they stop `skyfill firehose` (the batch being applied is
saved with its cursor). The end of its feed ends it once it has applied what it read and
the re-fetches it started have come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from skyfill import gcpolicy
from skyfill.errors import SkyfillError
from skyfill.firehose.config import FirehoseConfig
from skyfill.firehose.errors import StreamStopped
from skyfill.firehose.run import (
    ConsumerParts,
    StreamBusy,
    StreamDir,
    make_consumer,
    saved_cursor,
    source_key,
    stopped_by_signals,
    stream_clients,
    stream_probe,
)
from skyfill.firehose.shards import HEADER, pipe_reader, read_feed, shard_source
from skyfill.firehose.state import StreamState
from skyfill.sinks.factory import open_stream_sink
from skyfill.storage.lockfile import exclusive

log = logging.getLogger(__name__)

REPORT_SECONDS = 0.5
LOCK_WAIT_SECONDS = 60.0
"""How long a shard waits for the shard of an earlier run (its router killed, it saving
what it applied) to let go of the shard's directory."""
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ShardOrders:
    config: FirehoseConfig
    """The shard's: the stream's, run in one process, without --until-live, --duration
    or --labels (the router's)."""
    index: int
    shards: int
    root: Path
    max_memory: int | None
    router: int
    """The router's PID."""


class Reporter:
    """JSON lines to the router."""

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def __call__(self, line: dict[str, Any]) -> None:
        data = orjson.dumps(line) + b"\n"
        with contextlib.suppress(BrokenPipeError):  # the router is gone: nobody to tell
            while data:
                data = data[os.write(self._fd, data) :]


def serve(orders: ShardOrders, feed_fd: int, report_fd: int) -> int:
    """The shard's life, in the forked process; its exit code."""
    report = Reporter(report_fd)
    _end_with_the_router(orders.router)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the consumer's handlers are set
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        asyncio.run(_serve(orders, feed_fd, report))
    except StreamStopped as exc:
        report({"error": exc.message, "stopped": True})
        return 1
    except SkyfillError as exc:
        report({"error": str(exc)})
        return 1
    except BaseException as exc:  # said by the router in one line, as the CLI says its own
        report({"error": f"internal error: {type(exc).__name__}: {exc}"})
        return 1
    return 0


def _end_with_the_router(router: int) -> None:
    """SIGTERM when the router dies, also by SIGKILL (Linux), so that a shard outlives its
    stream by one stop at most: it saves what it applied and exits."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != router:  # the router was gone already
        os._exit(1)


async def _serve(orders: ShardOrders, feed_fd: int, report: Reporter) -> None:
    feed = await pipe_reader(feed_fd)
    if await _frame_seq(feed) is None:
        return  # the router let go before it said go (the stream was busy)
    where = StreamDir(orders.root)
    busy = StreamBusy(f"shard directory {where.root} is still held by another process")
    with exclusive(where.lock, busy, wait=LOCK_WAIT_SECONDS):
        await _run(orders, where, feed, report)


async def _frame_seq(feed: asyncio.StreamReader) -> int | None:
    """A handshake frame's seq (None: the feed ended)."""
    try:
        _size, seq = HEADER.unpack(await feed.readexactly(HEADER.size))
    except asyncio.IncompleteReadError:
        return None
    return seq


async def _run(
    orders: ShardOrders, where: StreamDir, feed: asyncio.StreamReader, report: Reporter
) -> None:
    gcpolicy.tune()
    config = orders.config
    source = shard_source(source_key(config.from_host), orders.index, orders.shards)
    state = StreamState(where.state)
    sink = open_stream_sink(
        config.sink, stream_id=config.stream_id, state_dir=where.root, shard=orders.index
    )
    try:
        await asyncio.to_thread(sink.check)
        report({"saved": await saved_cursor(config, state, sink, source)})
        start = await _frame_seq(feed)
        if start is None:
            return  # the router stopped before the stream began
        parts = ConsumerParts.of(state, orders.max_memory, children=config.workers() > 0)
        async with stream_clients(config) as (session, client):
            facts = parts.facts()
            consumer = make_consumer(
                config,
                source=source,
                session=session,
                client=client,
                sink=sink,
                state=state,
                parts=parts,
                probe=stream_probe(config, session),
                stats=facts,
                feed=read_feed(feed),
            )
            with stopped_by_signals(consumer.stop):
                async with _reporting(facts, report):
                    await consumer.run(start)
            final = facts()
            state.put_stats(final)
            report({"done": final})
    finally:
        sink.close()
        state.close()


@contextlib.asynccontextmanager
async def _reporting(facts: Callable[[], dict[str, Any]], report: Reporter) -> AsyncIterator[None]:
    async def every() -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            report({"facts": facts()})

    task = asyncio.create_task(every())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

"""One shard of a split stream (`skyfill firehose --shards N`): a process the router
(`shards.py`) starts as `python -m skyfill.firehose.shard_main`, with its orders in the
environment (SHARD_ENV, JSON: the stream's config, its index, the shard count, its
directory, where a shard with no saved cursor starts, its memory limit, the log level).

It runs the stream's consumer over its feed (its stdin, `shards.read_feed`), with a state
of its own (`<stream dir>/shard-K/state.sqlite`) and its own cursor in the sink (source
`host:port#K/N`). To its stdout it writes JSON lines (`shards.Report`): where it starts,
its facts every REPORT_SECONDS, then its final facts, or the one line of what stopped it.
SIGTERM and SIGINT stop it as they stop `skyfill firehose` (the batch being applied is
saved with its cursor); the end of its feed ends it once it has applied what it read and
the re-fetches it started have come back.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson

from skyfill import gcpolicy
from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.stream.client import subscribe
from skyfill.errors import SkyfillError
from skyfill.firehose.book import RepoBook
from skyfill.firehose.config import FirehoseConfig
from skyfill.firehose.errors import StreamStopped
from skyfill.firehose.run import (
    HELD_BYTES_DEFAULT,
    StreamBusy,
    StreamDir,
    make_consumer,
    saved_cursor,
    source_key,
    stream_clients,
)
from skyfill.firehose.shards import SHARD_ENV, read_feed, shard_source
from skyfill.firehose.state import StreamState
from skyfill.firehose.stats import StreamCounters
from skyfill.firehose.window import probe_with
from skyfill.monitor.logs import configure_logging
from skyfill.ratelimit.memory_gate import MemoryGate
from skyfill.sinks.factory import open_stream_sink
from skyfill.storage.lockfile import exclusive

log = logging.getLogger(__name__)

REPORT_SECONDS = 0.5
PR_SET_PDEATHSIG = 1


LOCK_WAIT_SECONDS = 60.0
"""How long a shard waits for the shard of an earlier run (its router killed, it saving
what it applied) to let go of the shard's directory."""


def main() -> None:
    _end_with_the_router()
    orders = orjson.loads(os.environ[SHARD_ENV])
    configure_logging(orders["log_level"])
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # until the consumer's handlers are set
    where = StreamDir(Path(orders["dir"]))
    busy = StreamBusy(f"shard directory {where.root} is still held by another process")
    try:
        with exclusive(where.lock, busy, wait=LOCK_WAIT_SECONDS):
            asyncio.run(_serve(orders, where))
    except StreamStopped as exc:
        _report({"error": exc.message, "stopped": True})
        sys.exit(1)
    except SkyfillError as exc:
        _report({"error": str(exc)})
        sys.exit(1)
    except Exception as exc:  # said by the router in one line, as the CLI says its own
        _report({"error": f"internal error: {type(exc).__name__}: {exc}"})
        sys.exit(1)


def _end_with_the_router() -> None:
    """SIGTERM when the router dies, also by SIGKILL (Linux), so that a shard outlives its
    stream by one stop at most: it saves what it applied and exits."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() == 1:  # the router was gone already
        sys.exit(1)


async def _serve(orders: dict[str, Any], where: StreamDir) -> None:
    gcpolicy.tune()
    config = FirehoseConfig(**orders["config"])
    index, shards = int(orders["index"]), int(orders["shards"])
    source = shard_source(source_key(config.from_host), index, shards)
    state = StreamState(where.state)
    sink = open_stream_sink(
        config.sink, stream_id=config.stream_id, state_dir=where.root, shard=index
    )
    try:
        await asyncio.to_thread(sink.check)
        saved = await saved_cursor(config, state, sink, source)
        start = saved if saved is not None else orders["origin"]
        _report({"start": start})
        counters = StreamCounters()
        memory = MemoryGate(orders["max_memory"], children=config.workers() > 0)
        held = (orders["max_memory"] or HELD_BYTES_DEFAULT * 4) // 4
        book = RepoBook(state.load_repos(), held)
        async with stream_clients(config) as (session, client):
            resolver = IdentityResolver(client, config.plc_url)

            def facts() -> dict[str, Any]:
                data = counters.snapshot(memory.rss())
                data.update(
                    desynchronized_repos=book.count_desynchronized(),
                    repos_known=len(book),
                    held_bytes=book.held_bytes,
                )
                return data

            feed = read_feed(await _stdin())
            consumer = make_consumer(
                config,
                source=source,
                session=session,
                client=client,
                sink=sink,
                state=state,
                book=book,
                resolver=resolver,
                counters=counters,
                probe=probe_with(
                    subscribe,
                    config.from_host,
                    session=session,
                    allow_private_network=config.allow_private_network,
                ),
                memory=memory,
                stats=facts,
                feed=feed,
            )
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, consumer.stop)
            async with _reporting(facts):
                await consumer.run(start)
            final = facts()
            state.put_meta("stats", {**final, "updated_at": time.time()})
            _report({"done": final})
    finally:
        sink.close()
        state.close()


async def _stdin() -> asyncio.StreamReader:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=1 << 20)
    pipe = os.fdopen(sys.stdin.fileno(), "rb", buffering=0, closefd=False)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), pipe)
    return reader


@contextlib.asynccontextmanager
async def _reporting(facts: Any) -> AsyncIterator[None]:
    async def every() -> None:
        while True:
            await asyncio.sleep(REPORT_SECONDS)
            _report({"facts": facts()})

    task = asyncio.create_task(every())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def _report(line: dict[str, Any]) -> None:
    with contextlib.suppress(BrokenPipeError):  # the router is gone: nobody to tell
        sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
        sys.stdout.buffer.flush()


if __name__ == "__main__":
    main()

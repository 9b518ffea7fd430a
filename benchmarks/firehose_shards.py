"""The event stream split by DID over N processes: how fast that shape could be, measured
with today's pieces (issue 15's ≥30k events/s unverified on 2 cores).

Not a mode of skyfill: a probe of a design (docs/BENCHMARKS.md §35). One process reads the
recorded stream (aiohttp's websocket client, as `skyfill firehose` does), reads each
message's DID (`frames.peek`, the C path) and hands the message to the shard that owns the
DID (crc32 of the DID mod N), 256 messages at a time over a pipe. Each shard is a process
that does, for its DIDs, what the consumer and its decode workers do today, with the real
code: `decoding.decode_message` (the frame read, the slice's CIDs and records checked, no
signature), the real `Applier` (a repo book, DID documents from the recording's PLC, rev
ordering, the changes), and the real Parquet event log (`EventLogSink`, one file per
`--batch` events, into a directory of its own). What it leaves out: the stream's state
saves (a SQLite row per batch), progress, and any coordination of the shards' cursors.

    PYTHONPATH=src .venv/bin/python -m benchmarks.firehose_shards --shards 2 --repeat 3

prints, per run, the wall time from the connection to the last shard's exit, events/s, and
the CPU seconds of the reader and of each shard (and fhserve's, the server's); `--shards 0`
runs the same shard code in the reader's process (one process, for comparison).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import queue
import resource
import struct
import sys
import tempfile
import threading
import time
import zlib
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection
from pathlib import Path

import aiohttp
import psutil

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests.firehose.recording

from tests.firehose.recording import RecordingSpec, cached_recording, served  # noqa: E402

from skyfill import gcpolicy  # noqa: E402
from skyfill.atproto.identity import Identity, IdentityResolver  # noqa: E402
from skyfill.atproto.stream.frames import (  # noqa: E402
    CommitFrame,
    FrameError,
    IdentityFrame,
    peek,
)
from skyfill.atproto.xrpc import XrpcClient  # noqa: E402
from skyfill.firehose.apply import Applier  # noqa: E402
from skyfill.firehose.book import RepoBook  # noqa: E402
from skyfill.firehose.decoding import decode_message  # noqa: E402
from skyfill.firehose.stats import StreamCounters  # noqa: E402
from skyfill.net.aiohttp_transport import AiohttpTransport  # noqa: E402
from skyfill.net.http import HttpSettings, make_session  # noqa: E402
from skyfill.ratelimit.local import side_limiter  # noqa: E402
from skyfill.sinks.changes import Change, ChangeBatch  # noqa: E402
from skyfill.sinks.event_log import EventLogSink  # noqa: E402

CHUNK = 256
LENGTH = struct.Struct("<I")


# -- a shard: decode, apply, write -------------------------------------------------------


class Shard:
    """What one shard does with its messages, in the order they come."""

    def __init__(self, out: Path, plc_url: str, batch: int) -> None:
        self.out, self.plc_url, self.batch = out, plc_url, batch
        self.counters = StreamCounters()
        self.changes: list[Change] = []
        self.events = 0
        self.last_seq = 0

    async def open(self) -> None:
        self.session = make_session(HttpSettings(allow_private_network=True))
        client = XrpcClient(AiohttpTransport(self.session, True), True, side_limiter(16))
        self.resolver = IdentityResolver(client, self.plc_url)
        self.applier = Applier(
            book=RepoBook({}, 64 << 20),
            resolver=self.resolver,
            counters=self.counters,
            verify=False,
            keep_did=lambda did: True,
            keep_collection=None,
            request_resync=lambda did: None,
            fresh_identity=self._fresh_identity,
        )
        self._fresh: dict[int, asyncio.Task[Identity]] = {}
        self.sink = EventLogSink(self.out, "shards")
        self.sink.check()

    async def take(self, messages: list[bytes]) -> None:
        """A chunk decoded, the look-ups it needs made (as the consumer makes them: an
        #identity event's document read again, the other DIDs it names resolved if not
        known), then applied in order; the event log written every `batch` events."""
        decoded = [decode_message(m, {}, verify=False, keep_collection=None) for m in messages]
        waits: list[Awaitable[Identity]] = []
        for frame, _ in decoded:
            if type(frame) is IdentityFrame:
                task = asyncio.ensure_future(self.resolver.resolve(frame.did, fresh=True))
                self._fresh[frame.seq] = task
                waits.append(task)
        named = {f.repo for f, _ in decoded if type(f) is CommitFrame}
        waits += [self.resolver.resolve(d) for d in named if not self.resolver.knows(d)]
        if waits:
            await asyncio.gather(*waits)
        ready = self.applier.apply_ready
        for frame, pre in decoded:
            if isinstance(frame, FrameError):
                continue
            changes = ready(frame, pre)
            if changes is None:
                changes = await self.applier.apply(frame, pre)
            self.changes.extend(changes)
            self.events += 1
            self.last_seq = getattr(frame, "seq", self.last_seq) or self.last_seq
        if self.events >= self.batch:
            self.flush()

    async def _fresh_identity(self, frame: IdentityFrame) -> Identity:
        task = self._fresh.pop(frame.seq, None)
        if task is None:
            return await self.resolver.resolve(frame.did, fresh=True)
        return await task

    def flush(self) -> None:
        if self.changes:
            self.sink.apply(ChangeBatch("bench", self.last_seq, self.changes))
        self.changes, self.events = [], 0

    async def close(self) -> None:
        self.flush()
        self.sink.close()
        await self.session.close()


def _shard_main(conn: Connection, out: str, plc_url: str, batch: int) -> None:
    gcpolicy.tune()  # as the consumer and its workers do

    async def run() -> None:
        shard = Shard(Path(out), plc_url, batch)
        await shard.open()
        while blob := conn.recv_bytes():
            await shard.take(_split(blob))
        await shard.close()
        conn.send(shard.counters.applied)

    asyncio.run(run())


def _split(blob: bytes) -> list[bytes]:
    messages, at, view = [], 0, memoryview(blob)
    while at < len(blob):
        (n,) = LENGTH.unpack_from(blob, at)
        messages.append(bytes(view[at + 4 : at + 4 + n]))
        at += 4 + n
    return messages


def _join(messages: list[bytes]) -> bytes:
    return b"".join(LENGTH.pack(len(m)) + m for m in messages)


# -- the reader ---------------------------------------------------------------------------


async def _read(
    url: str, deliver: Callable[[int, list[bytes]], Awaitable[None]], shards: int
) -> int:
    """Every message of the stream from the start, each to its DID's shard; the count."""
    count = 0
    buffers: list[list[bytes]] = [[] for _ in range(max(1, shards))]
    async with aiohttp.ClientSession() as session:
        ws = await session.ws_connect(f"{url}?cursor=0", max_msg_size=20 << 20)
        while True:
            message = await ws.receive()
            if message.type is not aiohttp.WSMsgType.BINARY:
                break
            count += 1
            _kind, _seq, did = peek(message.data)
            k = zlib.crc32(did.encode()) % len(buffers) if did else 0
            buffers[k].append(message.data)
            if len(buffers[k]) >= CHUNK:
                await deliver(k, buffers[k])
                buffers[k] = []
        for k, rest in enumerate(buffers):
            if rest:
                await deliver(k, rest)
    return count


def run_sharded(url: str, plc_url: str, shards: int, batch: int, out: Path) -> dict[str, float]:
    context = multiprocessing.get_context("spawn")
    pipes, procs, senders = [], [], []
    for k in range(shards):
        parent, child = context.Pipe()
        proc = context.Process(
            target=_shard_main, args=(child, str(out / f"shard-{k}"), plc_url, batch)
        )
        proc.start()
        child.close()
        pipes.append(parent)
        procs.append(proc)
    queues: list[queue.Queue] = [queue.Queue(maxsize=16) for _ in range(shards)]

    def send(k: int) -> None:
        while (blob := queues[k].get()) is not None:
            pipes[k].send_bytes(blob)
        pipes[k].send_bytes(b"")

    for k in range(shards):
        senders.append(threading.Thread(target=send, args=(k,), daemon=True))
        senders[-1].start()

    async def deliver(k: int, messages: list[bytes]) -> None:
        blob = _join(messages)
        while True:  # never block the loop on a full queue
            try:
                queues[k].put_nowait(blob)
                return
            except queue.Full:
                await asyncio.sleep(0.001)

    before = os.times()
    reaped = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    count = asyncio.run(_read(url, deliver, shards))
    read_done = time.perf_counter() - started
    for q in queues:
        q.put(None)
    applied = sum(pipe.recv() for pipe in pipes)
    for proc in procs:
        proc.join()
    wall = time.perf_counter() - started
    after = os.times()
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {
        "messages": count,
        "applied": applied,
        "wall_s": wall,
        "read_s": read_done,
        "reader_cpu_s": (after.user - before.user) + (after.system - before.system),
        "shards_cpu_s": children.ru_utime + children.ru_stime - reaped.ru_utime - reaped.ru_stime,
    }


def run_inline(url: str, plc_url: str, batch: int, out: Path) -> dict[str, float]:
    async def main() -> tuple[int, int]:
        shard = Shard(out / "inline", plc_url, batch)
        await shard.open()

        async def deliver(_k: int, messages: list[bytes]) -> None:
            await shard.take(messages)

        count = await _read(url, deliver, 1)
        await shard.close()
        return count, shard.counters.applied

    before = os.times()
    started = time.perf_counter()
    count, applied = asyncio.run(main())
    wall = time.perf_counter() - started
    after = os.times()
    cpu = (after.user - before.user) + (after.system - before.system)
    return {
        "messages": count,
        "applied": applied,
        "wall_s": wall,
        "read_s": wall,
        "reader_cpu_s": cpu,
        "shards_cpu_s": 0.0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    p.add_argument("--accounts", type=int, default=2000)
    p.add_argument("--events", type=int, default=100000)
    p.add_argument("--shards", default="2", help="comma list of shard counts (0: inline)")
    p.add_argument("--batch", type=int, default=5000, help="events per event-log file")
    p.add_argument("--repeat", type=int, default=3)
    args = p.parse_args()
    spec = RecordingSpec(
        accounts=args.accounts, events=args.events,
        handle_changes=None, deactivations=None, deactivate_final=None,
    )  # fmt: skip
    recording, _ = cached_recording(spec)  # benchmarks/firehose.py's
    counts = [int(s) for s in args.shards.split(",")]
    print(f"recording {recording.path}; {os.cpu_count()} cpus; shards {counts}")
    with (
        tempfile.TemporaryDirectory() as tmp,
        served(recording, Path(tmp) / "served", close_at_end=True) as fh,
    ):
        server = psutil.Process(fh.pid)
        for r in range(args.repeat):
            for shards in counts:
                out = Path(tmp) / f"out-{r}-{shards}"
                srv0 = sum(server.cpu_times()[:2])
                if shards:
                    got = run_sharded(fh.stream_url, fh.plc_url, shards, args.batch, out)
                else:
                    got = run_inline(fh.stream_url, fh.plc_url, args.batch, out)
                srv = sum(server.cpu_times()[:2]) - srv0
                rate = got["messages"] / got["wall_s"]
                print(
                    f"[{r + 1}/{args.repeat}] shards={shards}: {got['messages']} messages, "
                    f"{got['applied']} applied, wall {got['wall_s']:.2f} s ({rate:,.0f} ev/s; "
                    f"read done at {got['read_s']:.2f} s), reader CPU {got['reader_cpu_s']:.2f} s, "
                    f"shards CPU {got['shards_cpu_s']:.2f} s, fhserve CPU {srv:.2f} s",
                    flush=True,
                )


if __name__ == "__main__":
    main()

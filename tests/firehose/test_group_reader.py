"""The index workers' Redis stream reader stops when its task is cancelled, also when the
cancellation lands just as a blocking read's reply arrives (redis-py 8 swallowed it there,
and `skyfill index --until-idle` then waited for ever at its end)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from skyfill.firehose import group_reader
from skyfill.firehose.group_reader import GroupReader
from tests.helpers import RedisServer

BLOCK_MS = 100
ROUNDS = 6


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server.url
    server.stop()


@pytest.mark.parametrize("hops", [0, 2, 3])
def test_a_reader_stops_when_cancelled_as_its_reply_arrives(
    redis_url: str, hops: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A blocking XREADGROUP times out on the server while the event loop is busy, so its
    (empty) reply is read before the task is cancelled `hops` loop turns later: the reader
    task must end with the cancellation every time, within a second."""
    monkeypatch.setattr(group_reader, "BLOCK_MS", BLOCK_MS)
    results = asyncio.run(_cancel_around_replies(redis_url, hops))
    assert results == ["cancelled"] * ROUNDS


async def _cancel_around_replies(url: str, hops: int) -> list[str]:
    client = aioredis.Redis.from_url(url)
    watcher = redis.Redis.from_url(url)
    results = []
    try:
        for round_ in range(ROUNDS):
            reader = GroupReader(client, f"consumer-{round_}", ["events"])
            task = asyncio.create_task(_drain(reader))
            await _until_blocked(watcher)
            _cancel_after_the_reply(task, hops)
            done, _ = await asyncio.wait({task}, timeout=1.0)
            if not done:
                results.append("still reading")
                task.cancel()
                await asyncio.wait({task}, timeout=2 * BLOCK_MS / 1000 + 1)
            else:
                results.append("cancelled" if task.cancelled() else f"ended: {task!r}")
    finally:
        await client.aclose()
        watcher.close()
    return results


async def _drain(reader: GroupReader) -> None:
    async for _ in reader.entries():
        pass


async def _until_blocked(watcher: redis.Redis) -> None:
    """Until the reader's XREADGROUP waits on the server (a blocked client)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        clients: list[dict] = watcher.client_list()  # type: ignore[assignment]
        if any("b" in c.get("flags", "") and c.get("cmd") == "xreadgroup" for c in clients):
            return
        await asyncio.sleep(0.005)
    raise AssertionError("the reader never blocked on XREADGROUP")


def _cancel_after_the_reply(task: asyncio.Task[None], hops: int) -> None:
    """Hold the loop past the server's block timeout (the reply arrives meanwhile), then
    cancel `task` `hops` loop turns later: after the reply's bytes were handed to the
    stream reader, before the task resumed."""
    loop = asyncio.get_running_loop()

    def cancel_in(turns: int) -> None:
        if turns == 0:
            task.cancel()
        else:
            loop.call_soon(cancel_in, turns - 1)

    def hold_the_loop() -> None:
        time.sleep(2 * BLOCK_MS / 1000)
        loop.call_soon(cancel_in, hops)

    loop.call_soon(hold_the_loop)

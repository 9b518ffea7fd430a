"""A plain websocket reader of subscribeRepos (aiohttp), for checking what a server sends."""

from __future__ import annotations

import asyncio

import aiohttp

READ_TIMEOUT = 30


async def _read(url: str, limit: int | None, idle: float) -> list[bytes]:
    messages: list[bytes] = []
    timeout = aiohttp.ClientTimeout(total=READ_TIMEOUT * 4)
    async with (
        aiohttp.ClientSession(timeout=timeout) as session,
        session.ws_connect(url, max_msg_size=0, autoping=True) as ws,
    ):
        while limit is None or len(messages) < limit:
            try:
                message = await ws.receive(timeout=idle)
            except TimeoutError:
                break
            if message.type != aiohttp.WSMsgType.BINARY:
                break
            messages.append(message.data)
    return messages


def read_stream(
    url: str, cursor: int | None = 0, limit: int | None = None, idle: float = 2.0
) -> list[bytes]:
    """The binary messages `url` sends (from `cursor`; None: no cursor), until `limit`
    messages, a close, or `idle` seconds without one."""
    if cursor is not None:
        url = f"{url}{'&' if '?' in url else '?'}cursor={cursor}"
    return asyncio.run(_read(url, limit, idle))

"""The websocket client of an event stream (`com.atproto.sync.subscribeRepos`, or any
subscription of the same frame format, such as `com.atproto.label.subscribeLabels`): one
call, one connection.

`subscribe` opens the stream of a host at a cursor and yields each binary message (a frame,
for `frames.decode_frame`) until the connection ends, which always raises: StreamClosed
with the host's close code and reason (or 1006 when the connection dropped), or
StreamUnavailable when it never opened. Reconnecting, with backoff and the last seq seen as
the cursor, is the consumer's loop. The session is skyfill's (`net.http.make_session`), so
its private-network guard applies to every address a host name resolves to; a literal
private host is refused here, as the XRPC client refuses it.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
from yarl import URL

from skyfill.atproto.stream.exceptions import ABNORMAL_CLOSURE, StreamClosed, StreamUnavailable
from skyfill.atproto.stream.frames import MAX_FRAME_BYTES
from skyfill.errors import SkyfillError
from skyfill.net.guard import check_host
from skyfill.net.http import transport_error

SUBSCRIBE_REPOS = "com.atproto.sync.subscribeRepos"
SUBSCRIBE_LABELS = "com.atproto.label.subscribeLabels"
HEARTBEAT_SECONDS = 30.0
"""A ping this often; no pong within half of it ends the connection (StreamClosed, 1006)."""
CLOSE_SECONDS = 10.0
"""How long closing waits for the host's close frame (aiohttp's default), in all."""
_SCHEMES = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}


def stream_url(host: str, cursor: int | None, method: str = SUBSCRIBE_REPOS) -> str:
    """`http://h:p` -> `ws://h:p/xrpc/<method>?cursor=N` (https -> wss). A ws/wss URL with
    a path is taken as the stream's own URL (only the cursor is set)."""
    url = URL(host)
    scheme = _SCHEMES.get(url.scheme)
    if scheme is None or not url.host:
        raise ValueError(f"not an http(s) or ws(s) URL: {host[:200]!r}")
    base_url = url.scheme in ("http", "https") or url.path in ("", "/")
    url = url.with_scheme(scheme).with_query(None).with_fragment(None)
    if base_url:
        url = url.with_path(f"{url.path.rstrip('/')}/xrpc/{method}")
    return str(url if cursor is None else url.with_query(cursor=str(cursor)))


async def subscribe(
    url: str,
    cursor: int | None,
    *,
    session: aiohttp.ClientSession,
    max_frame_bytes: int = MAX_FRAME_BYTES,
    allow_private_network: bool = False,
    heartbeat: float = HEARTBEAT_SECONDS,
    close_timeout: float = CLOSE_SECONDS,
    method: str = SUBSCRIBE_REPOS,
) -> AsyncIterator[bytes]:
    """Each binary message of the stream `method` at `url` (a host's base URL, see
    `stream_url`) from `cursor` (None: live events only). Raises StreamUnavailable or
    StreamClosed; a message over `max_frame_bytes` ends the connection (StreamClosed,
    1009). Leaving the iteration closes the connection, waiting `close_timeout` at most for
    the host's close (the messages still coming meanwhile are read and dropped); then it is
    dropped."""
    target = stream_url(url, cursor, method)
    check_host(URL(target).host or "", allow_private_network)
    ws = await _connect(session, target, max_frame_bytes, heartbeat)
    try:
        while True:
            message = await ws.receive()
            if message.type is aiohttp.WSMsgType.BINARY:
                yield message.data
            elif message.type is aiohttp.WSMsgType.TEXT:
                await ws.close(code=1003, message=b"binary frames only")
                raise StreamClosed(f"{_origin(target)} sent a text message", 1003, clean=False)
            else:
                raise _closed(ws, message, target)
    finally:
        if not ws.closed:
            # a closing handshake reads what the host still sends; cancelled, it aborts
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(close_timeout):
                    await ws.close()


async def _connect(
    session: aiohttp.ClientSession, url: str, max_bytes: int, heartbeat: float
) -> aiohttp.ClientWebSocketResponse:
    try:
        return await session.ws_connect(url, max_msg_size=max_bytes, heartbeat=heartbeat)
    except aiohttp.WSServerHandshakeError as exc:
        raise StreamUnavailable(
            f"{_origin(url)} answered the websocket handshake with {exc.status} {exc.message}",
            status=exc.status,
        ) from None
    except (TimeoutError, aiohttp.ClientError, OSError) as exc:
        mapped = transport_error(exc, url)
        if isinstance(mapped, SkyfillError) and not mapped.retryable:
            raise mapped from None  # the private-network guard: terminal, not a lost stream
        raise StreamUnavailable(f"no stream at {_origin(url)}: {mapped}") from None


def _closed(
    ws: aiohttp.ClientWebSocketResponse, message: aiohttp.WSMessage, url: str
) -> StreamClosed:
    """The StreamClosed for a CLOSE, CLOSING, CLOSED or ERROR message."""
    code = ws.close_code
    if message.type is aiohttp.WSMsgType.ERROR:
        error = message.data
        code = code if code and code != ABNORMAL_CLOSURE else ABNORMAL_CLOSURE
        return StreamClosed(
            f"{_origin(url)}: the stream failed ({code}): {error}", code, str(error), clean=False
        )
    if message.type is aiohttp.WSMsgType.CLOSE:
        code, reason = int(message.data), str(message.extra or "")
        return StreamClosed(f"{_origin(url)} closed the stream ({code} {reason})", code, reason)
    return StreamClosed(
        f"{_origin(url)}: the connection dropped", code or ABNORMAL_CLOSURE, clean=False
    )


def _origin(url: str) -> str:
    parsed = URL(url)
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.explicit_port else "")


RECONNECT_MAX_SECONDS = 30.0


async def resubscribing(
    open_stream: Callable[..., AsyncIterator[bytes]],
    url: str,
    cursor: Callable[[], int | None],
    *,
    dropped: Callable[[StreamClosed | StreamUnavailable], None],
    backoff_max: float = RECONNECT_MAX_SECONDS,
    **client: Any,
) -> AsyncIterator[bytes]:
    """The messages of `open_stream(url, cursor(), **client)` (`subscribe`'s signature),
    opened again after every drop from the cursor as it is then: each drop is handed to
    `dropped` (which may move the cursor, or raise to end it all), then a pause of 0.5 s
    doubling up to `backoff_max`, jittered, and back to 0.5 s once a message comes."""
    backoff = 0.5
    while True:
        try:
            async for message in open_stream(url, cursor(), **client):
                backoff = 0.5
                yield message
        except (StreamClosed, StreamUnavailable) as exc:
            dropped(exc)
        await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
        backoff = min(backoff * 2, backoff_max)

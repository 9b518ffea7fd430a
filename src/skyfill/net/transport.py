"""The HTTP transport seam: one GET at a time, its status, headers and body, and nothing of
XRPC. `atproto/xrpc.py` makes its requests through it; its implementations are
`aiohttp_transport.py` (aiohttp, which also serves skyfill's WebSockets) and
`lean_transport.py` (HTTP/1.1 on asyncio with the llhttp parser: a third to a half of
aiohttp's CPU a request, for the fetch path where requests are the work).

A transport raises only skyfill's errors: `RequestTimeout`, `NetworkError` and
`PrivateNetworkRefused` (the address guard, `net/guard.py`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Literal, Protocol

from skyfill.errors import UsageError
from skyfill.net.settings import HttpSettings

HttpClient = Literal["lean", "aiohttp"]
HTTP_CLIENTS: tuple[HttpClient, ...] = ("lean", "aiohttp")


def parse_http_client(text: str) -> HttpClient:
    """`--http-client`'s value, or a UsageError naming the choices."""
    if text not in HTTP_CLIENTS:
        raise UsageError(f"http-client must be one of {', '.join(HTTP_CLIENTS)}, not {text!r}")
    return text


class HttpResponse(Protocol):
    """An answer whose body has not been read yet."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Looked up case-insensitively."""
        ...

    @property
    def content_length(self) -> int | None:
        """The body's length as it will be read (None when unknown, or when the body is
        compressed: its declared length is then not the length read)."""
        ...

    async def read(self) -> bytes:
        """The whole body."""
        ...

    def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        """The body in chunks of at most `size` bytes, as it arrives."""
        ...


class HttpTransport(Protocol):
    """Makes GET requests; the connection is released when the context exits."""

    def get(
        self, url: str, params: Mapping[str, str | int] | None = None
    ) -> AbstractAsyncContextManager[HttpResponse]: ...

    async def close(self) -> None: ...


def make_transport(settings: HttpSettings, client: HttpClient = "aiohttp") -> HttpTransport:
    """The transport `client` names, with `settings`' limits, timeouts and guard."""
    if client == "lean":
        from skyfill.net.lean_transport import LeanTransport

        return LeanTransport(settings)
    if client == "aiohttp":
        from skyfill.net.aiohttp_transport import AiohttpTransport
        from skyfill.net.http import make_session

        return AiohttpTransport(make_session(settings), settings.allow_private_network)
    raise UsageError(f"http-client must be one of {', '.join(HTTP_CLIENTS)}, not {client!r}")

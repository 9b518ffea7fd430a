"""The HTTP transport over an aiohttp session (`net/http.make_session`): redirects,
compression and connection pooling are aiohttp's; its failures become skyfill's errors."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

import aiohttp
from yarl import URL

from skyfill.net.guard import check_host
from skyfill.net.http import transport_error


class AiohttpResponse:
    """An aiohttp answer behind the `HttpResponse` protocol."""

    __slots__ = ("_resp", "_url")

    def __init__(self, resp: aiohttp.ClientResponse, url: str) -> None:
        self._resp = resp
        self._url = url

    @property
    def status(self) -> int:
        return self._resp.status

    @property
    def headers(self) -> Mapping[str, str]:
        return self._resp.headers

    @property
    def content_length(self) -> int | None:
        encoding = self._resp.headers.get("Content-Encoding", "identity").strip().lower()
        return self._resp.content_length if encoding == "identity" else None

    async def read(self) -> bytes:
        try:
            return await self._resp.read()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(exc, self._url) from None

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._resp.content.iter_chunked(size):
                yield chunk
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(exc, self._url) from None


class AiohttpTransport:
    """GET requests through one aiohttp session, which it closes. The session's resolver
    guards the names (`net/http.make_session`); literal addresses are checked here."""

    def __init__(self, session: aiohttp.ClientSession, allow_private_network: bool) -> None:
        self.session = session
        self._allow_private = allow_private_network

    @contextlib.asynccontextmanager
    async def get(
        self, url: str, params: Mapping[str, str | int] | None = None
    ) -> AsyncIterator[AiohttpResponse]:
        check_host(URL(url).host or "", self._allow_private)
        try:
            resp = await self.session.get(url, params=params)
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise transport_error(exc, url) from None
        try:
            yield AiohttpResponse(resp, url)
        finally:
            resp.release()

    async def close(self) -> None:
        await self.session.close()

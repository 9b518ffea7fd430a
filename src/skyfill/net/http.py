"""The one place aiohttp sessions are made: connection limits, timeouts, user agent, and
the address guard in their DNS resolver. (Only what uses aiohttp imports this module: a
local backfill with the lean transport never loads aiohttp, ~0.12 s of start-up.)"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import DefaultResolver
from yarl import URL

from skyfill.errors import NetworkError, RequestTimeout
from skyfill.net.guard import check_host, public_only
from skyfill.net.settings import USER_AGENT, HttpSettings


def make_session(settings: HttpSettings) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=settings.max_connections,
        limit_per_host=64,
        resolver=GuardedResolver(settings.allow_private_network),
        ttl_dns_cache=300,
    )
    timeout = aiohttp.ClientTimeout(
        total=settings.total_timeout,
        sock_connect=settings.connect_timeout,
        sock_read=settings.read_timeout,
    )
    return aiohttp.ClientSession(
        connector=connector,
        timeout=timeout,
        headers={"User-Agent": USER_AGENT},
        auto_decompress=True,
    )


def transport_error(exc: BaseException, url: str) -> Exception:
    """Map an aiohttp/asyncio failure to skyfill's transient error classes."""
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return RequestTimeout(f"timed out talking to {_origin(url)}")
    cause = getattr(exc, "__cause__", None) or getattr(exc, "os_error", None)
    if isinstance(cause, Exception) and type(cause).__module__.startswith("skyfill"):
        return cause
    return NetworkError(f"{type(exc).__name__} talking to {_origin(url)}: {exc}")


def _origin(url: str) -> str:
    parsed = URL(url)
    return f"{parsed.scheme}://{parsed.host}" + (f":{parsed.port}" if parsed.explicit_port else "")


class GuardedResolver(AbstractResolver):
    """A DNS resolver that drops private addresses when they are not allowed."""

    def __init__(self, allow_private: bool) -> None:
        self._inner = DefaultResolver()
        self._allow_private = allow_private

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        check_host(host, self._allow_private)
        answers = await self._inner.resolve(host, port, family)
        if self._allow_private:
            return answers
        return public_only(host, answers, lambda answer: answer["host"])

    async def close(self) -> None:
        await self._inner.close()

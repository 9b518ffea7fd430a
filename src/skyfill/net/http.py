"""The one place HTTP sessions are made: connection limits, timeouts, user agent, guard."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from yarl import URL

from skyfill import __version__
from skyfill.errors import NetworkError, RequestTimeout
from skyfill.net.guard import GuardedResolver

USER_AGENT = f"skyfill/{__version__} (+https://github.com/skyfill/skyfill)"


@dataclass(frozen=True, kw_only=True, slots=True)
class HttpSettings:
    """How skyfill talks HTTP."""

    connect_timeout: float = 10.0
    """Seconds to establish a connection."""
    read_timeout: float | None = 60.0
    """Seconds of silence allowed between two chunks of a response."""
    total_timeout: float | None = 900.0
    """Seconds for one whole request, download included."""
    max_connections: int = 256
    """Open connections across all hosts."""
    allow_private_network: bool = False
    """Allow endpoints on loopback/private/link-local addresses."""


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

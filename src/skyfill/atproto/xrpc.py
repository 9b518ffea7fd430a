"""XRPC over HTTP: the requests skyfill makes and how their failures map to error classes."""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager
from contextvars import ContextVar
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import NamedTuple, TypedDict, TypeVar, overload
from urllib.parse import urlsplit

import orjson

from skyfill.atproto.exceptions import (
    InvalidResponse,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
    RepoTooLarge,
    XrpcRequestError,
)
from skyfill.errors import RateLimited, ServerError, SkyfillError
from skyfill.net.guard import check_host
from skyfill.net.transport import HttpResponse, HttpTransport
from skyfill.ratelimit.base import Limiter

_REPO_ERRORS: dict[str, type[SkyfillError]] = {
    "RepoNotFound": RepoNotFound,
    "NotFound": RepoNotFound,
    "RepoDeactivated": RepoDeactivated,
    "RepoTakendown": RepoTakendown,
    "RepoSuspended": RepoSuspended,
}
UNSUPPORTED_ERRORS = frozenset({"MethodNotImplemented", "XRPCNotSupported"})
"""Error names with which XRPC servers say that they do not implement a method."""
CHUNK_BYTES = 1 << 16
MAX_ERROR_BODY = 64 * 1024
"""The most read of an error answer's body (its message is all that is kept)."""
MAX_DOCUMENT_BYTES = 1 << 20
"""The most `XrpcClient.get_json` reads of an identity document (one is a few KB)."""
MAX_JSON_BYTES = 8 << 20
"""The largest JSON answer `XrpcClient.query` reads (a listRepos page of 1000 is ~200 KB)."""
_NETLOC_END = re.compile(r"[/?#]")
"""Where a URL's `host[:port]` ends."""
T = TypeVar("T")
ErrorMapper = Callable[[int, Mapping[str, str], bytes, str], SkyfillError]
"""(status, headers, body, what) of a non-2xx answer -> the error to raise."""
BodyReader = Callable[[HttpResponse], Awaitable[tuple["bytes | CarFile", bool]]]
"""Reads an answer's body: (the bytes kept, or the file they went to; whether the body was
longer)."""


@dataclass(frozen=True, slots=True)
class CarSpill:
    """Where `get_repo` writes a CAR larger than `over_bytes` (a directory of the caller's,
    which deletes what a crash leaves there), instead of holding it in memory."""

    directory: Path
    over_bytes: int


@dataclass(frozen=True, slots=True)
class CarFile:
    """A downloaded CAR that went to a file (`CarSpill`); `len()` is its size in bytes."""

    path: Path
    size: int

    def __len__(self) -> int:
        return self.size


@dataclass(slots=True)
class RequestStats:
    """Counters of what was sent and received (by a client, or for one unit of work)."""

    requests: int = 0
    bytes_received: int = 0
    rate_limited: int = 0
    wait_seconds: float = 0.0
    by_status: dict[int, int] = field(default_factory=dict)

    def count(self, status: int) -> None:
        self.requests += 1
        self.by_status[status] = self.by_status.get(status, 0) + 1


# The stats of the unit of work (one DID) the current asyncio task is doing, if any.
current_stats: ContextVar[RequestStats | None] = ContextVar("skyfill_request_stats", default=None)


def retry_after_seconds(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from Retry-After (seconds or HTTP date) or RateLimit-Reset (epoch)."""
    now = time.time()
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                pass
    reset = headers.get("RateLimit-Reset")
    if reset:
        try:
            reset_value = float(reset)
        except ValueError:
            return None
        # Absolute epoch seconds on the reference PDS; small numbers are delta-seconds.
        return max(0.0, reset_value - now) if reset_value > 1e9 else reset_value
    return None


def error_for_response(status: int, headers, body: bytes, what: str) -> SkyfillError:
    """The typed error of a non-2xx XRPC answer (JSON `{error, message}` or anything else)."""
    name, message = error_fields(body)
    if status == 429:
        return RateLimited(f"{what}: HTTP 429 {message}".strip(), retry_after_seconds(headers))
    if status >= 500:
        return ServerError(f"{what}: HTTP {status} {name} {message}".strip())
    if name in _REPO_ERRORS:
        return _REPO_ERRORS[name](f"{what}: {name} {message}".strip())
    if status == 404 or (status == 400 and "not found" in message.lower()):
        return RepoNotFound(f"{what}: HTTP {status} {name} {message}".strip())
    return XrpcRequestError(f"{what}: HTTP {status} {name} {message}".strip())


def error_fields(body: bytes) -> tuple[str, str]:
    """The `error` name and `message` of an XRPC error body ("" for what it lacks)."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        text = body[:200].decode("utf-8", errors="replace")
        return "", " ".join(text.split())[:200]
    if not isinstance(data, dict):
        return "", ""
    return str(data.get("error") or ""), str(data.get("message") or "")[:300]


class RateLimitFields(TypedDict):
    """`Ticket.observe`'s keyword arguments, as read from an answer's headers."""

    limit: int | None
    remaining: int | None
    reset_at: float | None
    retry_after: float | None
    window: float | None


def rate_limit_headers(headers: Mapping[str, str]) -> RateLimitFields:
    """RateLimit-Limit / -Remaining / -Reset (epoch, or seconds when small) / -Policy and
    Retry-After, as the limiter's observation fields."""
    now = time.time()
    limit = _number(headers.get("RateLimit-Limit"))
    policy = headers.get("RateLimit-Policy") or ""
    if limit is None and policy:
        limit = _number(policy.split(";")[0])
    window = next(
        (
            _number(part.split("=", 1)[1])
            for part in policy.split(";")[1:]
            if part.strip().startswith("w=")
        ),
        None,
    )
    remaining = _number(headers.get("RateLimit-Remaining"))
    reset = _number(headers.get("RateLimit-Reset"))
    reset_at = None if reset is None else (reset if reset > 1e9 else now + reset)
    return {
        "limit": None if limit is None else int(limit),
        "remaining": None if remaining is None else int(remaining),
        "reset_at": reset_at,
        "retry_after": retry_after_seconds(headers),
        "window": window,
    }


def _number(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return float(value.split(",")[0].strip())
    except ValueError:
        return None


class Answer(NamedTuple):
    """What a request got: its status, its body (as read) and whether the body was cut."""

    status: int
    body: bytes | CarFile
    """Bytes, except a getRepo answer written to a file (`CarSpill`)."""
    cut: bool


def host_key(url: str) -> str:
    """The limiter's name for the host of `url`: `host:port` with an explicit port, else
    `host`."""
    return _host_and_key(_netloc(url))[1]


def _netloc(url: str) -> str:
    return _NETLOC_END.split(url.partition("://")[2], maxsplit=1)[0]


@functools.lru_cache(maxsize=1 << 16)
def _host_and_key(netloc: str) -> tuple[str, str]:
    """(host, limiter key) of a URL's `host[:port]` (parsed once per host)."""
    try:
        split = urlsplit(f"//{netloc}")
        host, port = split.hostname or "", split.port
    except ValueError:
        return netloc, netloc  # (no request will go there: the transport refuses it)
    return host, host if port is None else f"{host}:{port}"


def _not_200(status: int) -> bool:
    return status != 200


def _throttled_or_5xx(status: int) -> bool:
    """An identity document's failures; other statuses (404, 410) are its caller's to read."""
    return status == 429 or status >= 500


class XrpcClient:
    """Makes the XRPC and identity requests of a backfill through one HTTP transport.

    Every request waits for its host's turn in the limiter first (rate, server window,
    concurrency), and reports the answer back so that the limiter learns the host's limits.
    """

    def __init__(
        self,
        transport: HttpTransport,
        allow_private_network: bool,
        limiter: Limiter,
        admission: Callable[[], AbstractAsyncContextManager[None]] | None = None,
    ) -> None:
        """`admission`: entered after the host's and the global turn, before a repo download
        (the memory gate: it then weighs only what is about to be downloaded)."""
        self._admission = admission or contextlib.nullcontext
        self.transport = transport
        self._allow_private = allow_private_network
        self._limiter = limiter

    def _count(self, status: int, received: int = 0) -> None:
        """Count an answer for the DID being fetched (per-host counts live in the limiter)."""
        stats = current_stats.get()
        if stats is not None:
            stats.count(status)
            stats.bytes_received += received
            if status == 429:
                stats.rate_limited += 1

    def _count_wait(self, seconds: float) -> None:
        stats = current_stats.get()
        if stats is not None:
            stats.wait_seconds += seconds

    def _host(self, url: str) -> str:
        host, key = _host_and_key(_netloc(url))
        check_host(host, self._allow_private)
        return key

    async def get_json(self, url: str, what: str) -> tuple[int, object]:
        """GET a small JSON document; returns (status, parsed body or None)."""
        async with self._request(
            url, what, read=_body(MAX_DOCUMENT_BYTES, MAX_DOCUMENT_BYTES), failed=_throttled_or_5xx
        ) as answer:
            try:
                return answer.status, orjson.loads(_as_bytes(answer.body))
            except orjson.JSONDecodeError:
                return answer.status, None

    async def query(
        self,
        service: str,
        nsid: str,
        params: Mapping[str, str | int] | None = None,
        *,
        what: str | None = None,
        errors: ErrorMapper = error_for_response,
        max_bytes: int = MAX_JSON_BYTES,
    ) -> dict:
        """GET the XRPC query `nsid` on `service` (`<service>/xrpc/<nsid>?<params>`).

        Returns the JSON object of a 200 answer. Any other status raises
        `errors(status, headers, body, what)`; a 200 that is not a JSON object, or is longer
        than `max_bytes`, raises InvalidResponse.
        """
        url = f"{service.rstrip('/')}/xrpc/{nsid}"
        what = what or nsid
        async with self._request(
            url, what, params=params, read=_body(max_bytes), errors=errors
        ) as answer:
            if answer.cut:
                raise InvalidResponse(f"{what}: the answer is over {max_bytes} bytes")
            return _json_object(_as_bytes(answer.body), what)

    @overload
    async def get_repo(self, pds: str, did: str, max_bytes: int, then: None = None) -> bytes: ...

    @overload
    async def get_repo(
        self,
        pds: str,
        did: str,
        max_bytes: int,
        then: Callable[[bytes | CarFile], Awaitable[T]],
        spill: CarSpill | None = None,
    ) -> T: ...

    async def get_repo(
        self,
        pds: str,
        did: str,
        max_bytes: int,
        then: Callable[[bytes | CarFile], Awaitable[T]] | None = None,
        spill: CarSpill | None = None,
    ) -> T | bytes:
        """Download `com.atproto.sync.getRepo` for `did` as CAR bytes, refusing > max_bytes.

        With `then`, return `await then(car)`, still inside the admitted request slot: the
        global concurrency then also bounds the CARs held in memory while they are decoded.
        With `spill` (and `then`), a CAR over its size goes to a file as it arrives: `then`
        gets a `CarFile`, which is deleted when `then` returns (or the download fails).
        """
        url = f"{pds.rstrip('/')}/xrpc/com.atproto.sync.getRepo"
        what = f"getRepo {did}"
        read = _car(max_bytes, what, spill if then is not None else None)
        async with self._request(url, what, params={"did": did}, read=read, admit=True) as answer:
            body = answer.body
            try:
                if then is None:
                    assert isinstance(body, bytes)  # (no spill without `then`)
                    return body
                return await then(body)
            finally:
                if isinstance(body, CarFile):
                    body.path.unlink(missing_ok=True)

    @contextlib.asynccontextmanager
    async def _request(
        self,
        url: str,
        what: str,
        *,
        read: BodyReader,
        params: Mapping[str, str | int] | None = None,
        failed: Callable[[int], bool] = _not_200,
        errors: ErrorMapper = error_for_response,
        admit: bool = False,
    ) -> AsyncIterator[Answer]:
        """The sequence of every request: the host check; the host's (and the global) turn
        in the limiter, with `admit` also the memory gate; one GET, whose rate-limit headers
        go to the limiter and whose body (as `read` reads it) is counted for the host and
        the DID; a `failed` status raised as `errors(...)` (a transport raises its failures
        as skyfill's error classes). Yields the answer with the request's slot still held."""
        host = self._host(url)
        admission = self._admission if admit else contextlib.nullcontext
        async with self._limiter.request(host) as ticket, admission():
            self._count_wait(ticket.waited)
            async with self.transport.get(url, params=params) as resp:
                status = resp.status
                ticket.observe(status, **rate_limit_headers(resp.headers))
                body, cut = await read(resp)
                ticket.received(len(body))
                self._count(status, len(body))
                if failed(status):
                    raise errors(status, resp.headers, _as_bytes(body), what)
            yield Answer(status, body, cut)


def _as_bytes(body: bytes | CarFile) -> bytes:
    """A body read into memory (only a getRepo answer with a `CarSpill` goes to a file)."""
    if isinstance(body, CarFile):
        raise TypeError(f"{body.path}: a body written to a file, where bytes were expected")
    return body


def _body(ok_cap: int, other_cap: int = MAX_ERROR_BODY) -> BodyReader:
    """Read a 200 answer up to `ok_cap` bytes, any other up to `other_cap` (cut if longer)."""

    async def read(resp: HttpResponse) -> tuple[bytes, bool]:
        return await _read_upto(resp, ok_cap if resp.status == 200 else other_cap)

    return read


def _car(max_bytes: int, what: str, spill: CarSpill | None = None) -> BodyReader:
    """Read a 200 getRepo answer whole, raising RepoTooLarge past `max_bytes` (as declared
    or as streamed), to a file once it is over `spill`'s size; an error answer as `_body`
    does."""

    async def read(resp: HttpResponse) -> tuple[bytes | CarFile, bool]:
        if resp.status != 200:
            return await _read_upto(resp, MAX_ERROR_BODY)
        declared = resp.content_length
        if declared is not None and declared > max_bytes:
            raise RepoTooLarge(f"{what}: repo is {declared} bytes, over the {max_bytes} limit")
        if _bounded(resp, max_bytes if spill is None else min(max_bytes, spill.over_bytes)):
            return await resp.read(), False
        buffer = bytearray()
        chunks = resp.iter_chunks(CHUNK_BYTES)
        async for chunk in chunks:
            buffer += chunk
            if len(buffer) > max_bytes:
                raise RepoTooLarge(f"{what}: repo is over the {max_bytes}-byte limit")
            if spill is not None and max(len(buffer), declared or 0) > spill.over_bytes:
                return await _car_to_file(buffer, chunks, spill.directory, max_bytes, what), False
        return bytes(buffer), False

    return read


async def _car_to_file(
    head: bytearray, rest: AsyncIterator[bytes], directory: Path, max_bytes: int, what: str
) -> CarFile:
    """`head`, then the rest of the body, written to a new file in `directory` (deleted
    again if the body fails or is too large)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"car-{os.getpid()}-{secrets.token_hex(4)}.car"
    size = len(head)
    try:
        with open(path, "wb") as out:
            out.write(head)
            head.clear()
            async for chunk in rest:
                size += len(chunk)
                if size > max_bytes:
                    raise RepoTooLarge(f"{what}: repo is over the {max_bytes}-byte limit")
                out.write(chunk)  # to the page cache: no wait worth a thread
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    return CarFile(path, size)


def _bounded(resp: HttpResponse, cap: int) -> bool:
    """Whether the body is declared to be at most `cap` bytes as it will be read: then it
    is read in one call (a transport reads no more than the declared length), ~30 % less
    CPU than chunk by chunk. (A compressed body declares no length as it will be read.)"""
    declared = resp.content_length
    return declared is not None and declared <= cap


async def _read_upto(resp: HttpResponse, cap: int) -> tuple[bytes, bool]:
    """The body, up to `cap` bytes, and whether it was longer. (`content.read(n)` returns
    only what has arrived so far, which can be part of a body.)"""
    if _bounded(resp, cap):
        return await resp.read(), False
    buffer = bytearray()
    async for chunk in resp.iter_chunks(CHUNK_BYTES):
        buffer += chunk
        if len(buffer) > cap:
            return bytes(buffer[:cap]), True
    return bytes(buffer), False


def _json_object(body: bytes, what: str) -> dict:
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidResponse(f"{what}: the answer is not JSON") from None
    if not isinstance(data, dict):
        raise InvalidResponse(f"{what}: the answer is not a JSON object")
    return data

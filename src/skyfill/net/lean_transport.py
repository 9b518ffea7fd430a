"""A lean HTTP/1.1 client for the fetch path: GET requests on asyncio protocols, answers
parsed by llhttp (Node's parser, through `httptools`), connections kept alive per origin.

Why not aiohttp here: in a backfill the requests are the work (a DID is one identity
document and one repo), and aiohttp spends 2.5-3x this client's CPU a request around the
socket (URL objects, multidicts, cookie jar, tracing, timers): ~290 against ~120 µs a DID
on staticnet (`benchmarks/http_clients.py` measures both). It does what the fetch path
needs and no more: GET, keep-alive, redirects, TLS, the address guard, timeouts, bodies
read whole or streamed with back-pressure. It asks for no compression and refuses an
answer that comes compressed (`UnaskedEncoding`); the aiohttp transport remains for that
and for WebSockets.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator, Mapping
from urllib.parse import urlencode, urljoin, urlsplit

import httptools

from skyfill.errors import NetworkError, RequestTimeout
from skyfill.net.exceptions import UnaskedEncoding
from skyfill.net.guard import check_host, public_only
from skyfill.net.settings import USER_AGENT, HttpSettings

MAX_REDIRECTS = 10
DNS_TTL = 300.0
HIGH_WATER = 1 << 20
"""Bytes of body held unread before the connection stops reading (back-pressure)."""
MAX_IDLE_PER_ORIGIN = 64
KEEP_IDLE_SECONDS = 15.0
"""A kept-alive connection unused this long is closed (aiohttp's default too)."""
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_DEFAULT_PORTS = {"http": 80, "https": 443}
_PATH_START = re.compile(r"[/?#]")
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")
"""Controls and spaces: never sent in a request line (a header could be slipped in)."""
Origin = tuple[str, str, int]
"""(scheme, host, port)"""


class _Headers(dict[str, str]):
    """Header names lower-cased; looked up case-insensitively."""

    def get(self, key: str, default=None):  # type: ignore[override]
        return dict.get(self, key.lower(), default)

    def __getitem__(self, key: str) -> str:
        return dict.__getitem__(self, key.lower())

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and dict.__contains__(self, key.lower())


class _Answer:
    """One request's answer as it arrives on its connection (the `HttpResponse`)."""

    __slots__ = (
        "_buffered",
        "_chunks",
        "_conn",
        "_deadline",
        "_read_timeout",
        "_waiter",
        "complete",
        "content_length",
        "error",
        "has_head",
        "headers",
        "origin_text",
        "received_any",
        "status",
    )

    def __init__(self, conn: _Connection, deadline: float | None, read_timeout: float | None):
        self._conn = conn
        self._deadline = deadline
        self._read_timeout = read_timeout
        self._chunks: deque[bytes] = deque()
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self.origin_text = conn.origin_text
        self.status = 0
        self.headers = _Headers()
        self.content_length: int | None = None
        self.has_head = False
        self.complete = False
        self.received_any = False
        self.error: Exception | None = None

    # -- fed by the connection
    def on_headers_complete(self, status: int, raw: list[tuple[bytes, bytes]]) -> None:
        self.status = status
        headers = self.headers
        for name, value in raw:
            key = name.decode("latin-1").lower()
            known = dict.get(headers, key)
            text = value.decode("latin-1")
            headers[key] = text if known is None else f"{known}, {text}"
        self.has_head = True
        declared = self.headers.get("content-length")
        if declared is not None and "transfer-encoding" not in self.headers:
            with contextlib.suppress(ValueError):
                self.content_length = int(declared)
        self._wake()

    def on_body(self, data: bytes) -> None:
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > HIGH_WATER:
            self._conn.pause()
        self._wake()

    def on_message_complete(self) -> None:
        self.complete = True
        self._wake()

    def fail(self, error: Exception) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- read by the caller
    async def wait_head(self) -> None:
        while not self.has_head:
            await self._next_event()

    async def read(self) -> bytes:
        parts: list[bytes] = []
        while True:
            if self._chunks:
                parts.extend(self._chunks)
                self._drained()
            if self.complete:
                return b"".join(parts)
            await self._next_event()

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        while True:
            while self._chunks:
                chunk = self._chunks.popleft()
                self._buffered -= len(chunk)
                if self._buffered <= HIGH_WATER // 2:
                    self._conn.resume()
                for start in range(0, len(chunk), size):
                    yield chunk if len(chunk) <= size else chunk[start : start + size]
            if self.complete:
                return
            await self._next_event()

    def _drained(self) -> None:
        self._chunks.clear()
        self._buffered = 0
        self._conn.resume()

    async def _next_event(self) -> None:
        """Until the connection brings something (head, body, end) or fails, or the read
        or the whole request times out."""
        if self.error is not None:
            raise self.error
        loop = self._conn.loop
        waiter = self._waiter = loop.create_future()
        timeout = _seconds_left(loop, self._deadline, self._read_timeout)
        timer = None if timeout is None else loop.call_later(timeout, _expire, waiter)
        try:
            await waiter
        except TimeoutError:
            raise RequestTimeout(f"timed out talking to {self.origin_text}") from None
        finally:
            self._waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise self.error


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


def _seconds_left(
    loop: asyncio.AbstractEventLoop, deadline: float | None, read_timeout: float | None
) -> float | None:
    if deadline is None:
        return read_timeout
    left = max(0.0, deadline - loop.time())
    return left if read_timeout is None else min(left, read_timeout)


class _Connection(asyncio.Protocol):
    """One kept-alive connection to an origin: one answer at a time."""

    def __init__(self, origin: Origin, loop: asyncio.AbstractEventLoop) -> None:
        self.origin = origin
        self.origin_text = _origin_text(origin)
        self.loop = loop
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.answer: _Answer | None = None
        self.closed = False
        self._paused = False
        self._keep_alive = False
        self._informational = False
        self.idle_since = 0.0
        self._raw_headers: list[tuple[bytes, bytes]] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        answer = self.answer
        if answer is None:  # nothing was asked: the server is not speaking HTTP to us
            self.close()
            return
        answer.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            answer.fail(NetworkError(f"malformed HTTP answer from {self.origin_text}: {exc}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        answer = self.answer
        if answer is None or answer.complete:
            return
        if answer.has_head and answer.content_length is None and not _chunked(answer):
            answer.on_message_complete()  # a body that ends with the connection
            return
        reason = f"{type(exc).__name__}: {exc}" if exc else "the connection closed"
        answer.fail(NetworkError(f"{reason} talking to {self.origin_text}"))

    # -- parser callbacks (httptools calls them by name)
    def on_header(self, name: bytes, value: bytes) -> None:
        self._raw_headers.append((name, value))

    def on_headers_complete(self) -> None:
        raw, self._raw_headers = self._raw_headers, []
        status = self.parser.get_status_code()
        if status < 200:  # an informational answer (100 Continue...): the real one follows
            self._informational = True
            return
        if self.answer is not None:
            self.answer.on_headers_complete(status, raw)

    def on_body(self, body: bytes) -> None:
        if self.answer is not None:
            self.answer.on_body(body)

    def on_message_complete(self) -> None:
        if self._informational:
            self._informational = False
            return
        # (the parser forgets it once the callback returns, ready for the next message)
        self._keep_alive = self.parser.should_keep_alive()
        if self.answer is not None:
            self.answer.on_message_complete()

    # -- flow
    def send(self, request: bytes, answer: _Answer) -> None:
        self.answer = answer
        if self.closed or self.transport is None or self.transport.is_closing():
            answer.fail(NetworkError(f"the connection closed talking to {self.origin_text}"))
            return
        self.transport.write(request)

    def pause(self) -> None:
        if not self._paused and self.transport is not None and not self.closed:
            self._paused = True
            self.transport.pause_reading()

    def resume(self) -> None:
        if self._paused and self.transport is not None and not self.closed:
            self._paused = False
            self.transport.resume_reading()

    def reusable(self) -> bool:
        answer = self.answer
        return (
            not self.closed
            and answer is not None
            and answer.complete
            and answer.error is None
            and self._keep_alive
        )

    def kept_since(self, too_old: float) -> bool:
        """Open, and idle since after `too_old` (loop time)."""
        return not self.closed and self.idle_since > too_old

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _chunked(answer: _Answer) -> bool:
    return "chunked" in (answer.headers.get("transfer-encoding") or "").lower()


class LeanTransport:
    """GET requests with kept-alive connections per origin. A connection serves one
    request at a time, so the limiter in front, which bounds the requests in flight (per
    host and in all), bounds the connections in use too; `max_connections` is not needed."""

    def __init__(self, settings: HttpSettings) -> None:
        self._settings = settings
        self._idle: dict[Origin, list[_Connection]] = {}
        self._bases: dict[str, tuple[Origin, str]] = {}
        self._addresses: dict[tuple[str, int], tuple[float, list[str]]] = {}
        self._tls: ssl.SSLContext | None = None
        self._swept = 0.0
        self._agent = f"User-Agent: {USER_AGENT}\r\nAccept: */*\r\n\r\n".encode("latin-1")

    def get(self, url: str, params: Mapping[str, str | int] | None = None) -> _Request:
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        return _Request(self, url)

    async def _exchange(self, url: str, deadline: float | None) -> tuple[_Connection, _Answer]:
        """Send the GET on a kept-alive connection (once more on a new one if the kept one
        turns out closed before any answer) and wait for the answer's head."""
        origin, target, host_header = self._parts(url)
        for attempt in range(2):
            conn = self._idle_connection(origin) if attempt == 0 else None
            reused = conn is not None
            if conn is None:
                conn = await self._connect(origin, deadline)
            answer = _Answer(conn, deadline, self._settings.read_timeout)
            request = f"GET {target} HTTP/1.1\r\nHost: {host_header}\r\n".encode("latin-1")
            conn.send(request + self._agent, answer)
            try:
                await answer.wait_head()
            except NetworkError:
                conn.close()
                if reused and not answer.received_any:
                    continue  # the server had closed the idle connection
                raise
            except BaseException:
                conn.close()
                raise
            return conn, answer
        raise AssertionError("unreachable")

    def _parts(self, url: str) -> tuple[Origin, str, str]:
        """(origin, request target, Host header) of an http(s) URL (the part before the
        path parsed once per origin)."""
        if not url.isascii() or _UNSAFE.search(url):
            raise NetworkError(f"not a URL that can be sent: {url[:200]!r}")
        scheme_end = url.find("://")
        path = _PATH_START.search(url, scheme_end + 3) if scheme_end > 0 else None
        base, target = (url, "/") if path is None else (url[: path.start()], url[path.start() :])
        target = target.split("#", 1)[0]
        if target[0] != "/":
            target = "/" + target  # (a query without a path)
        known = self._bases.get(base)
        if known is None:
            known = self._bases[base] = _origin_and_host(base)
        return known[0], target, known[1]

    def _idle_connection(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin)
        too_old = asyncio.get_running_loop().time() - KEEP_IDLE_SECONDS
        while idle:
            conn = idle.pop()
            if conn.kept_since(too_old):
                return conn
            conn.close()
        return None

    def _release(self, conn: _Connection) -> None:
        """Back to the idle pool if its answer was read to the end; else closed. Now and
        then, the connections idle for longer than `KEEP_IDLE_SECONDS` are closed: a job
        over thousands of hosts holds no socket to a host it is done with."""
        if not conn.reusable():
            conn.close()
            return
        conn.answer = None
        conn.resume()
        now = conn.idle_since = conn.loop.time()
        idle = self._idle.setdefault(conn.origin, [])
        if len(idle) < MAX_IDLE_PER_ORIGIN:
            idle.append(conn)
        else:
            conn.close()
        if now - self._swept > KEEP_IDLE_SECONDS / 2:
            self._close_idle(now - KEEP_IDLE_SECONDS)
            self._swept = now

    def _close_idle(self, too_old: float) -> None:
        for origin, idle in list(self._idle.items()):
            keep = []
            for conn in idle:
                if conn.kept_since(too_old):
                    keep.append(conn)
                else:
                    conn.close()
            if keep:
                self._idle[origin] = keep
            else:
                del self._idle[origin]

    async def _connect(self, origin: Origin, deadline: float | None) -> _Connection:
        """A new connection to one of the origin's addresses, tried in turn; each try gets
        an equal share of the connect timeout left, so that an address that swallows
        packets (an unrouted IPv6, say) leaves time for the next one."""
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        text = _origin_text(origin)
        timeout = self._settings.connect_timeout
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline - loop.time()))
        ends = loop.time() + timeout
        tls = self._tls_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeout):
                addresses = await self._resolve(host, port)
        except TimeoutError:
            raise RequestTimeout(f"timed out connecting to {text}") from None
        error: OSError | None = None
        for tried, address in enumerate(addresses):
            share = max(0.0, ends - loop.time()) / (len(addresses) - tried)
            try:
                async with asyncio.timeout(share):
                    _, conn = await loop.create_connection(
                        lambda: _Connection(origin, loop),
                        address,
                        port,
                        ssl=tls,
                        server_hostname=host if tls is not None else None,
                    )
                return conn
            except OSError as exc:  # (a try's TimeoutError is one too)
                error = exc
        if isinstance(error, TimeoutError) or error is None:
            raise RequestTimeout(f"timed out connecting to {text}")
        reason = getattr(error, "strerror", None) or error
        raise NetworkError(f"{type(error).__name__} talking to {text}: Cannot connect ({reason})")

    async def _resolve(self, host: str, port: int) -> list[str]:
        """The host's addresses, without private ones unless they are allowed (the guard)."""
        allow_private = self._settings.allow_private_network
        check_host(host, allow_private)
        with contextlib.suppress(ValueError):
            return [str(ipaddress.ip_address(host.strip("[]")))]
        loop = asyncio.get_running_loop()
        cached = self._addresses.get((host, port))
        if cached is not None and cached[0] > loop.time():
            return cached[1]
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise NetworkError(f"cannot resolve {host}: {exc}") from None
        addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
        if not allow_private:
            addresses = public_only(host, addresses, str)
        self._addresses[(host, port)] = (loop.time() + DNS_TTL, addresses)
        return addresses

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            self._tls = ssl.create_default_context()
        return self._tls

    async def close(self) -> None:
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()


class _Request:
    """`LeanTransport.get`'s context: enters with the answer's head (redirects followed),
    and exits releasing the connection (kept alive if the body was read to its end)."""

    __slots__ = ("_conn", "_transport", "_url")

    def __init__(self, transport: LeanTransport, url: str) -> None:
        self._transport = transport
        self._url = url
        self._conn: _Connection | None = None

    async def __aenter__(self) -> _Answer:
        transport = self._transport
        total = transport._settings.total_timeout
        deadline = None if total is None else asyncio.get_running_loop().time() + total
        url = self._url
        for _ in range(MAX_REDIRECTS + 1):
            conn, answer = await transport._exchange(url, deadline)
            location = answer.headers.get("location") if answer.status in _REDIRECTS else None
            if not location:
                self._conn = conn
                try:
                    _refuse_encoding(answer)
                except BaseException:
                    transport._release(conn)
                    raise
                return answer
            transport._release(conn)
            url = urljoin(url, location)
        raise NetworkError(f"more than {MAX_REDIRECTS} redirects, the last to {url[:200]}")

    async def __aexit__(self, *_exc: object) -> None:
        if self._conn is not None:
            self._transport._release(self._conn)


def _origin_and_host(base: str) -> tuple[Origin, str]:
    """The origin and the Host header of `scheme://host[:port]`."""
    split = urlsplit(base)
    scheme = split.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not split.hostname:
        raise NetworkError(f"not an http(s) URL: {base[:200]}")
    try:
        port = split.port or _DEFAULT_PORTS[scheme]
    except ValueError:
        raise NetworkError(f"bad port in {base[:200]}") from None
    origin = (scheme, split.hostname, port)
    return origin, _authority(origin)


def _authority(origin: Origin) -> str:
    """`host[:port]` as a URL and the Host header write it (the port only when it is not
    the scheme's own, an IPv6 address in brackets)."""
    scheme, host, port = origin
    shown = f"[{host}]" if ":" in host else host
    return shown if port == _DEFAULT_PORTS[scheme] else f"{shown}:{port}"


def _origin_text(origin: Origin) -> str:
    return f"{origin[0]}://{_authority(origin)}"


def _refuse_encoding(answer: _Answer) -> None:
    encoding = (answer.headers.get("content-encoding") or "identity").strip().lower()
    if encoding != "identity":
        raise UnaskedEncoding(
            f"{answer.origin_text} sent a compressed answer (Content-Encoding: {encoding}) that "
            "was not asked for; --http-client aiohttp reads it"
        )

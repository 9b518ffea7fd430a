"""The HTTP transport seam's contract (`net/transport.py`), which both transports pass
against real servers on loopback: aiohttp's web server for well-behaved answers, a raw
asyncio server for the odd ones (bodies ended by the connection, stale kept connections,
silence, garbage)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from skyfill.errors import NetworkError, RequestTimeout
from skyfill.net.exceptions import PrivateNetworkRefused
from skyfill.net.lean_transport import LeanTransport
from skyfill.net.settings import HttpSettings
from skyfill.net.transport import HTTP_CLIENTS, HttpClient, HttpTransport, make_transport
from tests.helpers import free_port, serve_app

BIG = bytes(range(256)) * (12 * 1024)  # 3 MB: past the lean client's read-ahead (1 MB)

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@pytest.fixture(params=HTTP_CLIENTS)
def http_client(request: pytest.FixtureRequest) -> HttpClient:
    return request.param


@contextlib.asynccontextmanager
async def transport_of(
    kind: HttpClient, *, private: bool = True, read_timeout: float = 5.0
) -> AsyncIterator[HttpTransport]:
    settings = HttpSettings(allow_private_network=private, read_timeout=read_timeout)
    transport = make_transport(settings, kind)
    try:
        yield transport
    finally:
        await transport.close()


class Peers:
    """The client ports a server has seen: one per connection."""

    def __init__(self) -> None:
        self.ports: list[int] = []


@pytest.fixture
async def site() -> AsyncIterator[tuple[str, Peers]]:
    peers = Peers()

    async def echo(request: web.Request) -> web.Response:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        if peer and peer[1] not in peers.ports:
            peers.ports.append(peer[1])
        return web.Response(
            body=f"{request.path}?{request.query_string}".encode(), headers={"X-Echo": "yes"}
        )

    async def chunked(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        for start in range(0, len(BIG), 100_000):
            await response.write(BIG[start : start + 100_000])
        await response.write_eof()
        return response

    async def moved(request: web.Request) -> web.Response:
        raise web.HTTPFound(location="/echo/there?from=moved")

    app = web.Application()
    app.router.add_get("/echo/{tail:.*}", echo)
    app.router.add_get("/big", chunked)
    app.router.add_get("/moved", moved)
    async with serve_app(app) as url:
        yield url, peers


@contextlib.asynccontextmanager
async def raw_server(handler: Handler) -> AsyncIterator[tuple[str, list[int]]]:
    """A server that runs `handler` on every connection; yields its URL and a list with
    one entry per connection accepted."""
    accepted: list[int] = []

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(1)
        try:
            await handler(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", accepted
    finally:
        server.close()
        # (a handler left waiting on a silent client ends with its connection)


async def test_a_get_gives_status_headers_length_and_body(
    site: tuple[str, Peers], http_client: HttpClient
) -> None:
    url, _ = site
    params = {"did": "did:plc:x", "n": 3}
    async with (
        transport_of(http_client) as transport,
        transport.get(f"{url}/echo/a", params=params) as r,
    ):
        body = await r.read()
        assert r.status == 200
        assert r.headers.get("x-echo") == r.headers.get("X-ECHO") == "yes"
        assert r.content_length == len(body)
    assert body in (b"/echo/a?did=did%3Aplc%3Ax&n=3", b"/echo/a?did=did:plc:x&n=3")


async def test_connections_are_kept_alive_between_requests(
    site: tuple[str, Peers], http_client: HttpClient
) -> None:
    url, peers = site
    async with transport_of(http_client) as transport:
        for n in range(5):
            async with transport.get(f"{url}/echo/{n}") as r:
                assert await r.read() == f"/echo/{n}?".encode()
    assert len(peers.ports) == 1


async def test_a_chunked_body_is_read_whole_or_in_chunks_of_the_size_asked(
    site: tuple[str, Peers], http_client: HttpClient
) -> None:
    url, _ = site
    async with transport_of(http_client) as transport:
        async with transport.get(f"{url}/big") as r:
            assert r.content_length is None
            assert await r.read() == BIG
        async with transport.get(f"{url}/big") as r:
            chunks = [chunk async for chunk in r.iter_chunks(65536)]
        assert b"".join(chunks) == BIG
        assert max(len(c) for c in chunks) <= 65536
        # and the connection is kept for the next request
        async with transport.get(f"{url}/echo/after") as r:
            assert await r.read() == b"/echo/after?"


async def test_a_redirect_is_followed(site: tuple[str, Peers], http_client: HttpClient) -> None:
    url, _ = site
    async with transport_of(http_client) as transport, transport.get(f"{url}/moved") as r:
        assert r.status == 200
        assert await r.read() == b"/echo/there?from=moved"


async def test_a_body_left_unread_does_not_spoil_the_next_request(
    site: tuple[str, Peers], http_client: HttpClient
) -> None:
    url, _ = site
    async with transport_of(http_client) as transport:
        async with transport.get(f"{url}/big") as r:
            assert r.status == 200  # (its 3 MB not read)
        async with transport.get(f"{url}/echo/next") as r:
            assert await r.read() == b"/echo/next?"


async def test_the_lean_client_closes_connections_idle_too_long(
    site: tuple[str, Peers], monkeypatch: pytest.MonkeyPatch
) -> None:
    from skyfill.net import lean_transport

    monkeypatch.setattr(lean_transport, "KEEP_IDLE_SECONDS", 0.2)
    url, peers = site
    other_origin = url.replace("127.0.0.1", "localhost")  # the same server
    async with transport_of("lean") as transport:
        async with transport.get(f"{url}/echo/1") as r:
            await r.read()
        pool = transport._idle  # type: ignore[attr-defined]
        held = [conn for idle in pool.values() for conn in idle]
        assert len(held) == 1 and not held[0].closed
        await asyncio.sleep(0.3)
        async with transport.get(f"{other_origin}/echo/2") as r:
            await r.read()
        assert held[0].closed  # closed by the sweep after the other origin's request
        assert [conn for idle in pool.values() for conn in idle] != held
    assert len(peers.ports) == 2


async def test_a_body_ended_by_the_connection_is_read_to_its_end(
    http_client: HttpClient,
) -> None:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nno length, then EOF")
        await writer.drain()

    async with (
        raw_server(handler) as (url, _),
        transport_of(http_client) as transport,
        transport.get(f"{url}/x") as r,
    ):
        assert await r.read() == b"no length, then EOF"


async def test_an_informational_answer_is_passed_over(http_client: HttpClient) -> None:
    async def continues(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Final: 1\r\n\r\nfinal")
        await writer.drain()

    async with (
        raw_server(continues) as (url, _),
        transport_of(http_client) as transport,
        transport.get(f"{url}/x") as r,
    ):
        assert (r.status, r.headers.get("x-final"), await r.read()) == (200, "1", b"final")


async def test_a_kept_connection_the_server_closed_is_replaced(http_client: HttpClient) -> None:
    async def one_answer_then_close(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\nok")
        await writer.drain()  # then closes, though it said keep-alive

    async with raw_server(one_answer_then_close) as (url, accepted), transport_of(http_client) as t:
        for n in range(6):
            async with t.get(f"{url}/x") as r:
                assert await r.read() == b"ok"
            if n % 2:  # (the close has arrived before the next request, or not: both work)
                await asyncio.sleep(0.01)
    assert len(accepted) == 6


async def test_silence_times_out_before_the_head_and_within_the_body(
    http_client: HttpClient,
) -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)

    async def stalls(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
        await writer.drain()
        await asyncio.sleep(30)

    async with transport_of(http_client, read_timeout=0.3) as transport:
        async with raw_server(silent) as (url, _):
            with pytest.raises(RequestTimeout, match="timed out"):
                async with transport.get(f"{url}/x") as r:
                    await r.read()
        async with raw_server(stalls) as (url, _):
            with pytest.raises(RequestTimeout, match="timed out"):
                async with transport.get(f"{url}/x") as r:
                    await r.read()


async def test_a_refused_connection_is_a_network_error(http_client: HttpClient) -> None:
    nobody = f"http://127.0.0.1:{free_port()}"
    async with transport_of(http_client) as transport:
        with pytest.raises(NetworkError, match=f"talking to {nobody}"):
            async with transport.get(f"{nobody}/x"):
                pass


async def test_an_answer_that_is_not_http_is_a_network_error(http_client: HttpClient) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
        await writer.drain()

    async with raw_server(garbage) as (url, _), transport_of(http_client) as transport:
        with pytest.raises(NetworkError):
            async with transport.get(f"{url}/x") as r:
                await r.read()


async def test_private_addresses_are_refused_unless_allowed(
    site: tuple[str, Peers], http_client: HttpClient
) -> None:
    url, peers = site
    port = url.rsplit(":", 1)[1]
    async with transport_of(http_client, private=False) as transport:
        for target in (f"{url}/echo/x", f"http://localhost:{port}/echo/x"):
            with pytest.raises(PrivateNetworkRefused, match="private/loopback"):
                async with transport.get(target):
                    pass
    assert peers.ports == []


async def test_the_lean_client_sends_no_url_with_control_characters() -> None:
    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1)

    async with raw_server(record) as (url, accepted), transport_of("lean") as transport:
        with pytest.raises(NetworkError, match="not a URL that can be sent"):
            async with transport.get(f"{url}/x\r\nX-Injected: 1"):
                pass
    assert accepted == []


async def test_the_lean_client_tries_the_next_address_of_a_host_in_time() -> None:
    """A host's first address swallows the connection (a full accept queue: the SYN is
    dropped, as an unrouted address does); its second answers. The first try gets its share
    of the connect timeout, not all of it."""
    hole = socket.socket()
    hole.bind(("127.0.0.1", 0))
    hole.listen(0)
    port = hole.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):
            filler.connect(("127.0.0.1", port))

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(answer, "127.0.0.2", port)
    settings = HttpSettings(allow_private_network=True, connect_timeout=2.0)
    transport = LeanTransport(settings)
    two = ["127.0.0.1", "127.0.0.2"]  # (the host's DNS answer, as the cache holds it)
    transport._addresses[("multi.test", port)] = (asyncio.get_running_loop().time() + 60, two)
    try:
        started = time.monotonic()
        async with transport.get(f"http://multi.test:{port}/") as r:
            assert (r.status, await r.read()) == (200, b"ok")
        assert time.monotonic() - started < 1.9  # the first address had half of 2 s
    finally:
        await transport.close()
        server.close()
        for sock in (hole, *fillers):
            sock.close()


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for `localhost`, signed by its own key: (certificate, key) files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


@contextlib.asynccontextmanager
async def tls_site(directory: Path) -> AsyncIterator[tuple[str, Path]]:
    """An https server for `localhost` on loopback with a self-signed certificate: its
    URL and the certificate's file."""
    cert_file, key_file = _self_signed(directory)
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert_file, key_file)

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=b"over tls")

    app = web.Application()
    app.router.add_get("/hello", hello)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"https://localhost:{port}/hello", cert_file
    finally:
        await runner.cleanup()


async def test_an_untrusted_certificate_is_refused(http_client: HttpClient, tmp_path: Path) -> None:
    async with tls_site(tmp_path) as (url, _), transport_of(http_client) as transport:
        with pytest.raises(NetworkError, match=r"certificate verify failed"):
            async with transport.get(url):
                pass


async def test_the_lean_client_reads_https_from_a_trusted_host(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As from every real PDS: TLS with the host's name checked against its certificate,
    trusted here through SSL_CERT_FILE, which Python's default context reads (aiohttp makes
    its context once, when imported, so the variable cannot reach it in this process)."""
    async with tls_site(tmp_path) as (url, cert_file):
        monkeypatch.setenv("SSL_CERT_FILE", str(cert_file))
        async with transport_of("lean") as transport, transport.get(url) as r:
            assert (r.status, await r.read()) == (200, b"over tls")

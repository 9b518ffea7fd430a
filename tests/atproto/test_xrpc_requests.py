"""XrpcClient's one request sequence, as get_json, query and get_repo all go through it:
the limiter's turn, the counts per host and per DID, body caps, typed and transport errors,
over each HTTP transport."""

from __future__ import annotations

import contextlib
import gzip
import re
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from skyfill.atproto.exceptions import InvalidResponse, RepoNotFound, RepoTooLarge
from skyfill.atproto.xrpc import RequestStats, XrpcClient, current_stats
from skyfill.atproto.xrpc import host_key as limiter_key
from skyfill.errors import NetworkError, ServerError
from skyfill.net.exceptions import UnaskedEncoding
from skyfill.net.http import HttpSettings
from skyfill.net.transport import HTTP_CLIENTS, HttpClient, make_transport
from skyfill.ratelimit.local import LimitSettings, LocalLimiter
from skyfill.ratelimit.spec import parse_rate
from tests.helpers import free_port, host_key, serve_app

CAR = b"car bytes"


async def get_repo(request: web.Request) -> web.StreamResponse:
    did = request.query["did"]
    if did == "did:gone":
        return web.json_response({"error": "RepoNotFound", "message": "no"}, status=400)
    if did == "did:declared-big":
        return web.Response(body=b"x" * 100)
    if did == "did:gzip-big":  # 1,000 bytes in ~30 on the wire: its length says nothing
        body = gzip.compress(b"x" * 1000)
        return web.Response(body=body, headers={"Content-Encoding": "gzip"})
    if did == "did:streamed-big":
        response = web.StreamResponse()  # chunked: no Content-Length to refuse it by
        await response.prepare(request)
        for _ in range(10):
            await response.write(b"x" * 20)
        await response.write_eof()
        return response
    return web.Response(body=CAR)


async def document(request: web.Request) -> web.Response:
    status = int(request.match_info["status"])
    return web.json_response({"id": "did:web:x"}, status=status)


async def query(request: web.Request) -> web.Response:
    return web.json_response({"pad": "x" * int(request.query.get("size", "0"))})


@pytest.fixture
async def server() -> AsyncIterator[str]:
    app = web.Application()
    app.router.add_get("/doc/{status}", document)
    app.router.add_get("/xrpc/test.query", query)
    app.router.add_get("/xrpc/com.atproto.sync.getRepo", get_repo)
    async with serve_app(app) as url:
        yield url


class Gate:
    """The memory gate: records whether it is held."""

    def __init__(self) -> None:
        self.entered = 0
        self.held = False

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        self.entered += 1
        self.held = True
        try:
            yield
        finally:
            self.held = False


@pytest.fixture(params=HTTP_CLIENTS)
def http_client(request: pytest.FixtureRequest) -> HttpClient:
    return request.param


@pytest.fixture
async def client(http_client: HttpClient) -> AsyncIterator[tuple[XrpcClient, LocalLimiter, Gate]]:
    transport = make_transport(HttpSettings(allow_private_network=True), http_client)
    limiter = LocalLimiter(LimitSettings(default_rate=parse_rate("3000/5m")))
    gate = Gate()
    try:
        yield XrpcClient(transport, True, limiter, admission=gate), limiter, gate
    finally:
        await transport.close()


async def test_every_request_is_counted_for_its_host_and_its_did(
    server: str, client: tuple[XrpcClient, LocalLimiter, Gate]
) -> None:
    xrpc, limiter, _ = client
    stats = RequestStats()
    current_stats.set(stats)
    assert await xrpc.get_json(f"{server}/doc/200", "doc") == (200, {"id": "did:web:x"})
    assert await xrpc.get_json(f"{server}/doc/404", "doc") == (404, {"id": "did:web:x"})
    with pytest.raises(ServerError, match="doc: HTTP 503"):
        await xrpc.get_json(f"{server}/doc/503", "doc")
    assert await xrpc.query(server, "test.query", {"size": 3}) == {"pad": "xxx"}
    assert await xrpc.get_repo(server, "did:ok", 1000) == CAR
    with pytest.raises(RepoNotFound, match="getRepo did:gone: RepoNotFound"):
        await xrpc.get_repo(server, "did:gone", 1000)
    assert stats.by_status == {200: 3, 404: 1, 503: 1, 400: 1}
    host = limiter.snapshot()[host_key(server)]
    assert host["requests"] == stats.requests == 6
    assert host["bytes"] == stats.bytes_received > len(CAR)


async def test_only_get_repo_passes_the_gate_and_decodes_inside_it(
    server: str, client: tuple[XrpcClient, LocalLimiter, Gate]
) -> None:
    xrpc, _, gate = client

    async def decode(car: bytes) -> tuple[bytes, bool]:
        return car, gate.held

    assert await xrpc.get_repo(server, "did:ok", 1000, then=decode) == (CAR, True)
    await xrpc.get_json(f"{server}/doc/200", "doc")
    await xrpc.query(server, "test.query")
    assert gate.entered == 1 and not gate.held


@pytest.mark.parametrize(
    ("did", "message"),
    [
        ("did:declared-big", "repo is 100 bytes, over the 50 limit"),
        ("did:streamed-big", "over"),
        ("did:gzip-big", "over"),
    ],
)
async def test_a_repo_over_the_limit_is_refused(
    server: str,
    client: tuple[XrpcClient, LocalLimiter, Gate],
    http_client: HttpClient,
    did: str,
    message: str,
) -> None:
    if did == "did:gzip-big" and http_client == "lean":
        # the lean client asks for no compression, and refuses what comes compressed
        with pytest.raises(UnaskedEncoding, match="Content-Encoding: gzip"):
            await client[0].get_repo(server, did, 50)
        return
    with pytest.raises(RepoTooLarge, match=message):
        await client[0].get_repo(server, did, 50)


async def test_a_query_answer_over_its_cap_is_invalid(
    server: str, client: tuple[XrpcClient, LocalLimiter, Gate]
) -> None:
    with pytest.raises(InvalidResponse, match=r"test\.query: the answer is over 100 bytes"):
        await client[0].query(server, "test.query", {"size": 200}, max_bytes=100)


async def test_a_refused_connection_is_a_network_error_for_every_request(
    client: tuple[XrpcClient, LocalLimiter, Gate],
) -> None:
    xrpc, _, gate = client
    nobody = f"http://127.0.0.1:{free_port()}"
    for request in (
        xrpc.get_json(f"{nobody}/doc/200", "doc"),
        xrpc.query(nobody, "test.query"),
        xrpc.get_repo(nobody, "did:ok", 1000),
    ):
        with pytest.raises(NetworkError, match=re.escape(f"talking to {nobody}")):
            await request
    assert not gate.held


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("https://PDS.Example.com/xrpc/x?y=1", "pds.example.com"),
        ("https://pds.example.com:443/xrpc/x", "pds.example.com:443"),
        ("http://127.0.0.1:2583", "127.0.0.1:2583"),
        ("http://[::1]:8080/x", "::1:8080"),
        ("https://plc.directory?x#y", "plc.directory"),
    ],
)
def test_a_hosts_limiter_key_has_its_port_only_when_the_url_names_one(url: str, key: str) -> None:
    assert limiter_key(url) == key

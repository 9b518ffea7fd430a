"""The stream client against `fhserve.py` (../shared/staticnet), a stdlib websocket server
with the reference PDS's cursor rules, serving a small recording made with `encode_frame`:
cursors 0, N, the head and above it (FutureCursor, close 1008), the close codes, the size
limit, a refused port, a wrong path, the private-network guard, and a silent stream that
outlives the HTTP session's total timeout."""

from __future__ import annotations

import asyncio
import struct
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest

from skyfill.atproto.stream.client import stream_url, subscribe
from skyfill.atproto.stream.commit import verify_commit
from skyfill.atproto.stream.encode import encode_frame
from skyfill.atproto.stream.exceptions import StreamClosed, StreamUnavailable
from skyfill.atproto.stream.frames import CommitFrame, ErrorFrame, decode_frame
from skyfill.net.exceptions import PrivateNetworkRefused
from skyfill.net.http import HttpSettings, make_session
from tests.atproto.stream.builder import RepoWriter, post
from tests.e2e.conftest import shared_dir
from tests.helpers import Server, free_port, start_ready_process

FRAMES = 24


def write_recording(directory: Path, messages: list[tuple[int, bytes]]) -> None:
    """`frames.bin` (u32 LE length + message) and `frames.idx` (u64 seq, u64 offset)."""
    body, index = bytearray(), bytearray()
    for seq, message in messages:
        index += struct.pack("<QQ", seq, len(body))
        body += struct.pack("<I", len(message)) + message
    (directory / "frames.bin").write_bytes(bytes(body))
    (directory / "frames.idx").write_bytes(bytes(index))


def serve(directory: Path, *flags: str) -> tuple[Server, str]:
    port = free_port()
    script = shared_dir() / "staticnet" / "fhserve.py"
    server = start_ready_process(
        [sys.executable, str(script), str(directory), "--port", str(port), *flags], timeout=30
    )
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RepoWriter, list[bytes]]:
    directory = tmp_path_factory.mktemp("fh")
    writer = RepoWriter()
    messages = [
        encode_frame(writer.commit({f"app.bsky.feed.post/3l{i:02d}aaaaaaaaa": post(str(i))}))
        for i in range(FRAMES)
    ]
    write_recording(directory, list(enumerate(messages, start=1)))
    return directory, writer, messages


@pytest.fixture(scope="module")
def closing_host(recording: tuple[Path, RepoWriter, list[bytes]]) -> Iterator[str]:
    server, url = serve(recording[0], "--close-at-end")
    try:
        yield url
    finally:
        server.stop()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    session = make_session(HttpSettings(allow_private_network=True))
    try:
        yield session
    finally:
        await session.close()


async def read_all(
    session: aiohttp.ClientSession, url: str, cursor: int | None, **options: int
) -> tuple[list[bytes], StreamClosed]:
    """Every message until the stream closes, and how it closed."""
    messages: list[bytes] = []
    with pytest.raises(StreamClosed) as closed:
        async for message in subscribe(
            url, cursor, session=session, allow_private_network=True, **options
        ):
            messages.append(message)
    return messages, closed.value


@pytest.mark.parametrize("cursor", [0, -5, 1, 7, FRAMES - 1])
async def test_cursor_resumes_after_seq(
    session: aiohttp.ClientSession,
    closing_host: str,
    recording: tuple[Path, RepoWriter, list[bytes]],
    cursor: int,
) -> None:
    messages, closed = await read_all(session, closing_host, cursor)
    assert messages == recording[2][max(cursor, 0) :]
    assert (closed.code, closed.clean) == (1000, True)


async def test_the_served_commits_decode_and_verify(
    session: aiohttp.ClientSession,
    closing_host: str,
    recording: tuple[Path, RepoWriter, list[bytes]],
) -> None:
    messages, _ = await read_all(session, closing_host, 0)
    frames = [decode_frame(m) for m in messages]
    assert [f.seq for f in frames if isinstance(f, CommitFrame)] == list(range(1, FRAMES + 1))
    proofs = {verify_commit(f, recording[1].key.did_key).proof for f in frames}  # type: ignore[arg-type]
    assert proofs == {"no_prev_data", "verified"}


async def test_cursor_at_the_head_sends_nothing(
    session: aiohttp.ClientSession, closing_host: str
) -> None:
    messages, closed = await read_all(session, closing_host, FRAMES)
    assert messages == []
    assert closed.code == 1000


async def test_cursor_above_the_head_is_future_cursor(
    session: aiohttp.ClientSession, closing_host: str
) -> None:
    messages, closed = await read_all(session, closing_host, FRAMES + 1)
    assert [decode_frame(m) for m in messages] == [
        ErrorFrame("FutureCursor", "Cursor in the future.")
    ]
    assert (closed.code, closed.reason) == (1008, "FutureCursor")


async def test_a_message_over_the_limit_ends_the_stream(
    session: aiohttp.ClientSession,
    closing_host: str,
    recording: tuple[Path, RepoWriter, list[bytes]],
) -> None:
    limit = max(len(m) for m in recording[2]) - 1
    messages, closed = await read_all(session, closing_host, 0, max_frame_bytes=limit)
    assert all(len(m) <= limit for m in messages)
    assert len(messages) < FRAMES
    assert closed.code == 1009


async def test_a_refused_port_is_unavailable(session: aiohttp.ClientSession) -> None:
    with pytest.raises(StreamUnavailable):
        await anext(
            aiter(subscribe(f"http://127.0.0.1:{free_port()}", 0, session=session,
                            allow_private_network=True))
        )  # fmt: skip


async def test_a_wrong_path_is_unavailable_with_its_status(
    session: aiohttp.ClientSession, closing_host: str
) -> None:
    url = closing_host.replace("http", "ws") + "/xrpc/com.example.nothing"
    with pytest.raises(StreamUnavailable) as failed:
        await anext(aiter(subscribe(url, 0, session=session, allow_private_network=True)))
    assert failed.value.status == 501  # fhserve, like the PDS: MethodNotImplemented


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_private_hosts_are_refused_unless_allowed(closing_host: str, host: str) -> None:
    session = make_session(HttpSettings(allow_private_network=False))
    try:
        url = closing_host.replace("127.0.0.1", host)
        with pytest.raises(PrivateNetworkRefused):
            await anext(aiter(subscribe(url, 0, session=session)))
    finally:
        await session.close()


async def test_a_silent_stream_outlives_the_session_timeout(
    recording: tuple[Path, RepoWriter, list[bytes]],
) -> None:
    """A host with no new events sends nothing for as long as it likes: neither the HTTP
    session's total timeout nor the heartbeat (answered pongs) may end the stream."""
    server, url = serve(recording[0])
    session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1, sock_read=1))
    try:
        stream = aiter(
            subscribe(url, FRAMES - 1, session=session, allow_private_network=True, heartbeat=0.5)
        )
        assert await anext(stream) == recording[2][-1]
        with pytest.raises(asyncio.TimeoutError):
            await asyncio.wait_for(anext(stream), 2.5)
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await session.close()
        server.stop()


def test_stream_url() -> None:
    assert stream_url("http://h:1", 5) == "ws://h:1/xrpc/com.atproto.sync.subscribeRepos?cursor=5"
    assert stream_url("https://h/", None) == "wss://h/xrpc/com.atproto.sync.subscribeRepos"
    with pytest.raises(ValueError):
        stream_url("ftp://h", 0)

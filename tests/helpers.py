"""Helpers shared by the tests: run the CLI as a user would, and read a job's output."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pyarrow.dataset as ds
import pyarrow.parquet as pq
from aiohttp import web

from skyfill.atproto.xrpc import XrpcClient
from skyfill.net.settings import HttpSettings
from skyfill.net.transport import make_transport
from skyfill.ratelimit.local import LimitSettings, LocalLimiter
from skyfill.ratelimit.spec import parse_rate
from tests import cliserver

SKYFILL = [sys.executable, "-m", "skyfill"]
T = TypeVar("T")


def run_cli(
    *args: str, cwd: Path | None = None, timeout: float = 240, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `skyfill ARGS` in a process of its own; returns the completed process (text
    output). The process is forked from one that imported skyfill already (tests/cliserver.py:
    ~1 s of start-up saved per command); SKYFILL_TEST_CLI=exec starts `python -m skyfill`."""
    environment = {**os.environ, **(env or {})}
    if cliserver.enabled():
        return cliserver.server().run(list(args), environment, cwd, timeout)
    return subprocess.run(
        [*SKYFILL, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=environment,
        check=False,
    )


CliProcess = subprocess.Popen | cliserver.ForkedProcess
"""A command started with `start_cli`: a `subprocess.Popen`, or one forked by the tests'
server (tests/cliserver.py) that answers the same calls."""


def start_cli(
    *args: str,
    stdout: int | None = None,
    stderr: int | None = None,
    text: bool = False,
    start_new_session: bool = False,
    env: dict[str, str] | None = None,
) -> CliProcess:
    """Start `skyfill ARGS` without waiting for it, in a process of its own that the test
    may signal (by its PID, or its group with `start_new_session`). Forked from the tests'
    server like `run_cli`; SKYFILL_TEST_CLI=exec starts `python -m skyfill`."""
    environment = {**os.environ, **(env or {})}
    if cliserver.enabled():
        return cliserver.server().start(
            list(args), environment, None, stdout, stderr, text, start_new_session
        )
    return subprocess.Popen(
        [*SKYFILL, *args],
        env=environment,
        stdout=stdout,
        stderr=stderr,
        text=text,
        start_new_session=start_new_session,
    )


def run_args(net: Server, workdir: Path, job_id: str, *flags: str) -> list[str]:
    """`skyfill run` arguments for the whole DID list of a simulated network."""
    return [
        "run",
        "--dids",
        net.ready["dids"],
        "--workdir",
        str(workdir),
        "--job-id",
        job_id,
        "--plc-url",
        net.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
        *flags,
    ]


def run_job(
    net: Server, workdir: Path, job_id: str, *flags: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli(*run_args(net, workdir, job_id, *flags), env=env)


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], code: int, *needles: str
) -> None:
    """The command failed with `code`, its last line is the error, no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines and lines[-1].startswith(("skyfill: error:", "Error:")), result.stderr
    for needle in needles:
        assert needle in result.stderr


def wait_until(
    condition: Callable[[], T], timeout: float = 60, what: str = "", every: float = 0.05
) -> T:
    """Poll `condition` until it returns something truthy (returned); fails the test after
    `timeout` seconds. For a state another process reaches, instead of a fixed sleep."""
    deadline = time.monotonic() + timeout
    while True:
        if value := condition():
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what or condition}")
        time.sleep(every)


def wall_clock_after(stamp: float) -> float:
    """The wall clock once it reads strictly later than `stamp` (a time a store wrote):
    what a test needs before checking that the next write is stamped later, instead of a
    sleep of a guessed length."""
    return wait_until(lambda: (now := time.time()) > stamp and now, timeout=5, every=0.001)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def json_lines(text: str) -> list[dict]:
    """The JSON objects among the lines of `text` (other lines skipped)."""
    found = []
    for line in text.splitlines():
        if line.startswith("{"):
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return found


def job_dir(workdir: Path, job_id: str) -> Path:
    return workdir / "jobs" / job_id


def records_by_did(workdir: Path, job_id: str) -> dict[str, set[tuple[str, str]]]:
    """{did: {(collection/rkey, cid)}} from the job's final dataset."""
    path = job_dir(workdir, job_id) / "output" / "records"
    table = ds.dataset(path, format="parquet", partitioning="hive").to_table(
        columns=["did", "collection", "rkey", "cid"]
    )
    out: dict[str, set[tuple[str, str]]] = {}
    for row in table.to_pylist():
        out.setdefault(row["did"], set()).add((f"{row['collection']}/{row['rkey']}", row["cid"]))
    return out


def all_records(workdir: Path, job_id: str) -> list[dict]:
    path = job_dir(workdir, job_id) / "output" / "records"
    rows = ds.dataset(path, format="parquet", partitioning="hive").to_table().to_pylist()
    return sorted(rows, key=lambda r: (r["did"], r["collection"], r["rkey"]))


def repos(workdir: Path, job_id: str) -> dict[str, dict]:
    path = job_dir(workdir, job_id) / "output" / "repos.parquet"
    return {row["did"]: row for row in pq.read_table(path).to_pylist()}


def truth_records(truth: dict) -> dict[str, set[tuple[str, str]]]:
    return {
        did: {(r["path"], r["cid"]) for r in repo["records"]}
        for did, repo in truth["repos"].items()
    }


@dataclass
class Server:
    """A server process started by a test; stopped by PID."""

    process: subprocess.Popen[str]
    ready: dict

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


def start_ready_process(
    cmd: list[str], cwd: Path | None = None, timeout: float = 180, env: dict[str, str] | None = None
) -> Server:
    """Start a process that prints one JSON line with "ready": true on stdout."""
    process = subprocess.Popen(
        cmd,
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )
    deadline = time.monotonic() + timeout
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            if process.poll() is not None:
                err = process.stderr.read() if process.stderr else ""
                raise RuntimeError(f"{cmd[:3]} exited {process.returncode}: {err[-2000:]}")
            continue
        try:
            ready = json.loads(line)
        except json.JSONDecodeError:
            continue
        if ready.get("ready"):
            return Server(process, ready)
    process.kill()
    raise RuntimeError(f"{cmd[:3]} not ready after {timeout}s")


def start_simnet(out: Path, **options: object) -> Server:
    """Start `python -m skyfill.simnet` with options such as accounts=20, faults="hang";
    `ready["truth_data"]` is its ground truth as it started."""
    args = [sys.executable, "-m", "skyfill.simnet", "--out", str(out)]
    for key, value in options.items():
        args.append(f"--{key.replace('_', '-')}")
        if value != "":  # "" marks a flag without a value
            args.append(str(value))
    server = start_ready_process(args, timeout=120)
    server.ready["truth_data"] = json.loads(Path(server.ready["truth"]).read_text())
    return server


def dids_by_fault(net: Server) -> dict[str, str]:
    """{fault: DID} of a simulated network started with `faults=`."""
    return {r["fault"]: did for did, r in net.ready["truth_data"]["repos"].items() if r["fault"]}


@contextlib.asynccontextmanager
async def xrpc_client(rate: str = "3000/5m") -> AsyncIterator[tuple[XrpcClient, LocalLimiter]]:
    """skyfill's XRPC client as the backfill makes it (private network allowed, since the
    test servers are on loopback), and its limiter (`rate` for every host)."""
    transport = make_transport(HttpSettings(allow_private_network=True), "lean")
    limiter = LocalLimiter(LimitSettings(default_rate=parse_rate(rate)))
    try:
        yield XrpcClient(transport, True, limiter), limiter
    finally:
        await transport.close()


def host_key(url: str) -> str:
    """The limiter's name for the host of `url` (host:port)."""
    return url.removeprefix("http://").removeprefix("https://").rstrip("/")


def get_json(url: str, body: dict | None = None) -> dict:
    """GET `url` (or POST `body` as JSON) with the standard library; the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="GET" if body is None else "POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


class RedisServer:
    """A redis-server of a test's own on 127.0.0.1, stopped (or killed) by PID; it can be
    restarted on the same port and data directory, to test a Redis restart."""

    def __init__(self, directory: Path, appendonly: bool = False) -> None:
        self.directory = directory
        self.appendonly = appendonly
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (`make test` installs it)")
        self.directory.mkdir(parents=True, exist_ok=True)
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.appendonly else []
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", ""]
        args += ["--dir", str(self.directory), *(persistence or ["--appendonly", "no"])]
        log = (self.directory / "redis.log").open("ab")
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"redis-server not ready on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: no shutdown, no final save (what survives is what AOF had written)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)


@contextlib.asynccontextmanager
async def serve_app(app: web.Application) -> AsyncIterator[str]:
    """`app` served by aiohttp on a free loopback port: its base URL, until the end."""
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()

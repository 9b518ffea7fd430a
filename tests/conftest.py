"""Fixtures shared by every test package: the simulated network, a throwaway redis-server,
a PostgreSQL server, a Kafka-protocol broker; the hypothesis profiles (`ci`, the default:
few examples, derandomized; `long`: many)."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests import cliserver
from tests.helpers import Server, start_simnet
from tests.kafkabroker import KafkaBroker, KafkaUnavailable
from tests.pgserver import PostgresServer, PostgresUnavailable, memory_dir, start_postgres

_databases = itertools.count()

# Property tests (tests/atproto/test_fuzz.py, tests/interop/): a short, reproducible run by
# default; SKYFILL_HYPOTHESIS_PROFILE=long for a fuzzing session (benchmarks/fuzz.py).
settings.register_profile("ci", max_examples=60, deadline=None, derandomize=True, database=None)
settings.register_profile("long", max_examples=20_000, deadline=None, database=None)
settings.load_profile(os.environ.get("SKYFILL_HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session", autouse=True)
def _cli_server() -> Iterator[None]:
    """The server `run_cli` forks commands from (tests/cliserver.py), started on first use,
    stopped by its PID when the session ends."""
    yield
    cliserver.stop()


@pytest.fixture(scope="session")
def simnet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """60 accounts on 3 hosts, one did:web, one account in each terminal status."""
    out = tmp_path_factory.mktemp("simnet")
    server = start_simnet(
        out,
        accounts=60,
        hosts=3,
        mean_records=40,
        statuses="deactivated,takendown,suspended,not_found,tombstoned",
        unknown_dids=2,
        did_web="",
    )
    yield server
    server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A redis-server of our own on a free 127.0.0.1 port (no persistence), stopped at the end."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: the Redis state-store tests need it. "
            "`make test` installs it (target system-deps: apt-get install redis-server).",
            pytrace=False,
        )
    workdir: Path = tmp_path_factory.mktemp("redis")
    port = _free_port()
    # fmt: off
    args = [
        binary, "--save", "", "--appendonly", "no", "--port", str(port),
        "--bind", "127.0.0.1", "--dir", str(workdir),
    ]
    # fmt: on
    log = (workdir / "redis.log").open("wb")
    process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 15
        while True:
            if process.poll() is not None:
                pytest.fail(f"redis-server exited {process.returncode}: {_tail(workdir)}")
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"redis-server not ready on port {port}: {_tail(workdir)}")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()  # by PID: only the server this fixture started
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def _tail(workdir: Path) -> str:
    return (workdir / "redis.log").read_text(errors="replace")[-2000:]


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the tests' own (initdb in a temporary directory, a free
    loopback port), stopped by its PID at the end. Fails, never skips, when PostgreSQL is
    not installed (`make system-deps` installs it). Its files are in memory when there is
    room (tests/pgserver.py `memory_dir`): nothing is kept, fsync is off anyway."""
    try:
        server = start_postgres(parent=memory_dir())
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database on the test server."""
    return postgres.create_database(f"test_{next(_databases)}")


@pytest.fixture(scope="session")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    """A Kafka-protocol broker of the tests' own (tests/kafkabroker.py: Tansu from
    $SKYFILL_SHARED/kafka, on a free 127.0.0.1 port), stopped by its PID at the end. Each
    test writes topics of its own names."""
    data = tmp_path_factory.mktemp("kafka")
    try:
        broker = KafkaBroker.start(data, _free_port())
    except KafkaUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield broker
    finally:
        broker.stop()

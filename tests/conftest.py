"""Fixtures shared by every test package."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server, start_simnet
from tests.pgserver import PostgresServer, PostgresUnavailable, start_postgres

_databases = itertools.count()


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
    server.ready["truth_data"] = json.loads(Path(server.ready["truth"]).read_text())
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """A PostgreSQL server of the tests' own (initdb in a temporary directory, a free
    loopback port), stopped by its PID at the end. Fails, never skips, when PostgreSQL is
    not installed (`make system-deps` installs it)."""
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database on the test server."""
    return postgres.create_database(f"test_{next(_databases)}")

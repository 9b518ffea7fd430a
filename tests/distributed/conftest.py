"""Fixtures of the distributed-mode tests: real redis-servers and a simulated network."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import RedisServer, Server, start_simnet


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, with AOF on (fsync always), on a free port."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="package")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """120 accounts on 3 hosts (two in terminal states), ~30 records each."""
    out = tmp_path_factory.mktemp("distnet")
    server = start_simnet(
        out, accounts=120, hosts=3, mean_records=30, statuses="deactivated,not_found"
    )
    yield server
    server.stop()

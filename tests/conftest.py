"""Fixtures shared by every test package."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server, start_simnet


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

"""Fixtures for the label tests: crafted labelers on loopback (`fake`), and the reference
Ozone labeler (`../shared/refpds/labeler.mjs`) on the tests' PostgreSQL, with its truth."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import READY_TIMEOUT, node_binary, refpds_home, shared_dir
from tests.helpers import Server, start_ready_process
from tests.labels.fakelabeler import FakeNetwork
from tests.pgserver import PostgresServer

OZONE_LABELS = 24
_names = itertools.count()


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeNetwork]:
    network = FakeNetwork()
    network.start()
    try:
        yield network
    finally:
        network.stop()


@pytest.fixture
def name() -> str:
    """A fresh labeler name (a path on the fake host, and the seed of its DID and key)."""
    return f"labeler{next(_names)}"


@pytest.fixture(scope="package")
def ozone(tmp_path_factory: pytest.TempPathFactory, postgres: PostgresServer) -> Iterator[Server]:
    """Ozone with 24 labels (plain, on records, expiring, negated, expired, re-applied)
    and its own PLC; `ready["truth_data"]` is labeler.mjs's truth (current, negated,
    expired, stream, signingKey)."""
    home = refpds_home()
    node = node_binary(home)
    script = home / "labeler.mjs"
    if not script.is_file():
        pytest.fail(f"no {script}: run {shared_dir() / 'refpds' / 'setup.sh'}", pytrace=False)
    db = postgres.create_database("ozone")
    truth: Path = tmp_path_factory.mktemp("ozone") / "labels.json"
    command = [str(node), "labeler.mjs", "--db", db, "--labels", str(OZONE_LABELS),
               "--out", str(truth)]  # fmt: skip
    try:
        server = start_ready_process(
            command, cwd=home, timeout=READY_TIMEOUT, env={"REFPDS_HOME": str(home)}
        )
    except RuntimeError as exc:
        pytest.fail(f"the reference labeler did not start: {exc}", pytrace=False)
    try:
        server.ready["truth_data"] = json.loads(truth.read_text())
        yield server
    finally:
        server.stop()

"""The reference PDS network (the official TypeScript PDS + PLC from npm) for end-to-end tests.

The node binary comes from env REFPDS_NODE (the Makefile's `test` target sets it); without it
the fixture runs `$SKYFILL_SHARED/refpds/setup.sh` itself. It never skips: a network that cannot
be set up or started fails the tests with the reason.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Server, start_ready_process

REPO_ROOT = Path(__file__).resolve().parents[2]
NETWORK_OPTIONS = [
    "--accounts", "12", "--records", "30", "--pds", "2", "--big", "3000",
    "--deactivate", "1", "--takedown", "1", "--delete", "1",
]  # fmt: skip
SETUP_TIMEOUT = 600
READY_TIMEOUT = 180


def refpds_home() -> Path:
    return Path(os.environ.get("REFPDS_HOME", "/tmp/refpds"))


def shared_dir() -> Path:
    return Path(os.environ.get("SKYFILL_SHARED", REPO_ROOT.parent / "shared")).resolve()


def node_binary(home: Path) -> Path:
    """REFPDS_NODE if set, else what `refpds/setup.sh` prints (it installs on first use)."""
    given = os.environ.get("REFPDS_NODE", "").strip()
    if given:
        node = Path(given)
        if not (node.is_file() and os.access(node, os.X_OK)):
            pytest.fail(f"REFPDS_NODE={given} is not an executable file", pytrace=False)
        return node
    setup = shared_dir() / "refpds" / "setup.sh"
    if not setup.is_file():
        pytest.fail(
            f"no {setup}: set SKYFILL_SHARED to the shared directory, or REFPDS_NODE",
            pytrace=False,
        )
    try:
        done = subprocess.run(
            ["bash", str(setup)],
            capture_output=True,
            text=True,
            timeout=SETUP_TIMEOUT,
            env={**os.environ, "REFPDS_HOME": str(home)},
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{setup} did not finish in {SETUP_TIMEOUT}s", pytrace=False)
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines or not Path(lines[-1]).is_file():
        pytest.fail(
            f"{setup} failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}",
            pytrace=False,
        )
    return Path(lines[-1])


def _start_network(tmp_path_factory: pytest.TempPathFactory, options: list[str]) -> Server:
    home = refpds_home()
    node = node_binary(home)
    script = home / "net.mjs"
    if not script.is_file():
        pytest.fail(f"no {script}: run {shared_dir() / 'refpds' / 'setup.sh'}", pytrace=False)
    tmp = tmp_path_factory.mktemp("refpds")
    truth_path = tmp / "truth.json"
    command = [
        str(node), "net.mjs", *options,
        "--out", str(truth_path), "--data", str(tmp / "data"),
    ]  # fmt: skip
    try:
        server = start_ready_process(
            command, cwd=home, timeout=READY_TIMEOUT, env={"REFPDS_HOME": str(home)}
        )
    except RuntimeError as exc:
        pytest.fail(f"the reference PDS network did not start: {exc}", pytrace=False)
    server.ready["truth_data"] = json.loads(truth_path.read_text())
    return server


@pytest.fixture(scope="session")
def refpds(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """PLC + 2 PDS hosts with 12 seeded accounts (account 0 has 3000 records; the last three
    are deactivated, taken down and deleted). `ready["truth_data"]` is the ground truth."""
    server = _start_network(tmp_path_factory, NETWORK_OPTIONS)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def refpds_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A small network with the PDS's own rate limits on (`--rate-limits`): getRepo 6000
    per 5 min, other reads 3000 per 5 min, with RateLimit-* headers. (Seeding 3000 records
    would trip its write limits, hence a network of its own.)"""
    server = _start_network(
        tmp_path_factory, ["--accounts", "8", "--records", "20", "--pds", "2", "--rate-limits"]
    )
    try:
        yield server
    finally:
        server.stop()

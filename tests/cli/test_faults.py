"""Misbehaving hosts: each fault ends as the right per-DID status, the job still exits 0."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfill.simnet.server import FAULTS
from tests.helpers import Server, records_by_did, repos, run_cli, start_simnet, truth_records

EXPECTED = {
    "hang": ("failed", "timeout"),
    "truncate": ("invalid_repo", "invalid_repo"),
    "bad_cid": ("invalid_repo", "invalid_repo"),
    "missing_block": ("invalid_repo", "invalid_repo"),
    "flaky_503": ("ok", None),
    "flaky_429": ("ok", None),
    "generic_notfound": ("not_found", "not_found"),
}


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    import json

    server = start_simnet(
        tmp_path_factory.mktemp("faulty"),
        accounts=20,
        hosts=2,
        mean_records=30,
        faults=",".join(FAULTS),
    )
    server.ready["truth_data"] = json.loads(Path(server.ready["truth"]).read_text())
    yield server
    server.stop()


def test_every_fault_ends_with_its_status(faulty: Server, tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--dids",
        faulty.ready["dids"],
        "--workdir",
        str(tmp_path),
        "--job-id",
        "f",
        "--plc-url",
        faulty.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
        "--timeout",
        "2",
        "--attempts",
        "3",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = repos(tmp_path, "f")
    by_fault = {r["fault"]: did for did, r in faulty.ready["truth_data"]["repos"].items()}
    assert set(EXPECTED) <= set(by_fault)
    for fault, (status, error_class) in EXPECTED.items():
        row = rows[by_fault[fault]]
        assert row["status"] == status, (fault, row)
        if error_class == "timeout":
            assert "timed out" in row["error"] and row["attempts"] == 3
        elif error_class is not None:
            assert row["error"], fault
    assert rows[by_fault["flaky_503"]]["attempts"] == 3
    assert rows[by_fault["bad_cid"]]["error"].startswith("block does not match its CID")
    # Healthy and recovered repos are complete; broken ones contribute nothing.
    want = {d: r for d, r in truth_records(faulty.ready["truth_data"]).items() if r}
    assert records_by_did(tmp_path, "f") == want


def test_oversized_repos_are_refused(faulty: Server, tmp_path: Path) -> None:
    result = run_cli(
        "run",
        "--dids",
        faulty.ready["dids"],
        "--workdir",
        str(tmp_path),
        "--job-id",
        "s",
        "--plc-url",
        faulty.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
        "--timeout",
        "1",
        "--attempts",
        "1",
        "--max-repo-bytes",
        "4k",
    )
    assert result.returncode == 0, result.stderr
    rows = repos(tmp_path, "s")
    too_large = [r for r in rows.values() if r["error"] and "limit" in r["error"]]
    assert too_large and all(r["status"] == "failed" for r in too_large)
    assert all(r["car_bytes"] is None or r["car_bytes"] <= 4096 for r in rows.values())

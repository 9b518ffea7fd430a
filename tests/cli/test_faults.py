"""Misbehaving hosts: each fault ends as the right per-DID status, the job still exits 0.

Transient faults are retried twice over: by attempts within a task, and by retry phases
(retry_1..n) that re-batch only the DIDs whose last error is retryable.
"""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    Server,
    dids_by_fault,
    job_dir,
    records_by_did,
    repos,
    run_job,
    start_simnet,
    truth_records,
)

EXPECTED = {
    "hang": "failed",
    "truncate": "invalid_repo",
    "bad_cid": "invalid_repo",
    "missing_block": "invalid_repo",
    "flaky_503": "ok",
    "flaky_429": "ok",
    "generic_notfound": "not_found",
}


@pytest.fixture
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A fresh network per test: the flaky faults count requests from its start."""
    server = start_simnet(
        tmp_path_factory.mktemp("faulty"),
        accounts=20,
        hosts=2,
        mean_records=30,
        faults=",".join(EXPECTED),
        statuses="deactivated,takendown",
    )
    yield server
    server.stop()


def _run(net: Server, workdir: Path, job_id: str, *flags: str):
    return run_job(net, workdir, job_id, "--timeout", "1", *flags)


def _requests(net: Server) -> dict[str, int]:
    with urllib.request.urlopen(net.ready["pds"][0] + "/_simnet/requests") as response:
        return json.loads(response.read())


def _assert_outcomes(net: Server, workdir: Path, job_id: str) -> dict[str, dict]:
    rows = repos(workdir, job_id)
    for fault, status in EXPECTED.items():
        assert rows[dids_by_fault(net)[fault]]["status"] == status, (
            fault,
            rows[dids_by_fault(net)[fault]],
        )
    assert rows[dids_by_fault(net)["bad_cid"]]["error"].startswith(
        "cid_mismatch: block does not match its CID"
    )
    assert "timed out" in rows[dids_by_fault(net)["hang"]]["error"]
    want = {d: r for d, r in truth_records(net.ready["truth_data"]).items() if r}
    assert records_by_did(workdir, job_id) == want
    return rows


def test_attempts_within_a_task(faulty: Server, tmp_path: Path) -> None:
    result = _run(faulty, tmp_path, "f", "--attempts", "3", "--retries", "0")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    rows = _assert_outcomes(faulty, tmp_path, "f")
    assert rows[dids_by_fault(faulty)["flaky_503"]]["attempts"] == 3
    # the summary's most common reasons (three), read from the failed and invalid DIDs alone
    reasons = re.findall(r"^  1 x (\w+): (\w+):", result.stdout, re.MULTILINE)
    failing = {("invalid_repo", k) for k in ("cid_mismatch", "missing_block", "malformed_car")}
    assert len(reasons) == 3 and set(reasons) <= failing | {("failed", "timeout")}, reasons
    assert not (job_dir(tmp_path, "f") / "retries").exists()


def test_retry_phases_retry_only_retryable_failures(faulty: Server, tmp_path: Path) -> None:
    result = _run(
        faulty, tmp_path, "r", "--attempts", "1", "--retries", "2", "--retry-backoff", "0.1"
    )
    assert result.returncode == 0, result.stderr
    rows = _assert_outcomes(faulty, tmp_path, "r")
    faults = dids_by_fault(faulty)
    for name in ("flaky_503", "hang"):
        assert rows[faults[name]]["attempts"] == 3, name  # backfill, retry_1, retry_2
    # A 429 is "not now": the DID waits for its host and tries again without spending an
    # attempt, so it ends ok in the backfill phase.
    assert rows[faults["flaky_429"]]["attempts"] == 1
    root = job_dir(tmp_path, "r")
    first = json.loads((root / "retries" / "retry-1" / "manifest.json").read_text())
    second = json.loads((root / "retries" / "retry-2" / "manifest.json").read_text())
    assert first["error_type_counts"] == {"server_error": 1, "timeout": 1}
    assert sorted(first["failed_items"]) == sorted(faults[n] for n in ("flaky_503", "hang"))
    assert second["error_type_counts"] == {"server_error": 1, "timeout": 1}
    assert first["retries_launched"] == 2 and first["group"] == "retry_batch_1"
    # Terminal outcomes were requested exactly once.
    counts = _requests(faulty)
    terminal = [faults[n] for n in ("truncate", "bad_cid", "missing_block", "generic_notfound")]
    terminal += [
        d
        for d, r in faulty.ready["truth_data"]["repos"].items()
        if r["status"] in ("deactivated", "takendown")
    ]
    assert all(counts[did] == 1 for did in terminal), {d: counts[d] for d in terminal}
    assert counts[faults["flaky_503"]] == 3
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["phases"] == ["backfill", "retry_1", "retry_2", "aggregate"]


def test_oversized_repos_are_refused(faulty: Server, tmp_path: Path) -> None:
    result = _run(
        faulty, tmp_path, "s", "--attempts", "1", "--retries", "0", "--max-repo-bytes", "4k"
    )
    assert result.returncode == 0, result.stderr
    rows = repos(tmp_path, "s")
    too_large = [r for r in rows.values() if r["error"] and "limit" in r["error"]]
    assert too_large and all(r["status"] == "failed" for r in too_large)
    assert all(r["car_bytes"] is None or r["car_bytes"] <= 4096 for r in rows.values())

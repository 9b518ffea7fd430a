"""kill -9 at every phase boundary and inside the aggregation, then `resume`.

Each case runs a job with retry phases (a flaky host) and a multi-level aggregation
(fan-in 2), dies at one named failpoint (SKYFILL_FAILPOINT, see skyfill/failpoints.py),
and must then finish with exactly the ground truth: no record missing or duplicated,
one outcome per DID.
"""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    Server,
    all_records,
    records_by_did,
    repos,
    run_args,
    run_cli,
    start_simnet,
    truth_records,
)

CRASH_POINTS = [
    "job_submitted",
    "segment_committed:3",
    "task_marked_done:2",
    "retry_planned",
    "aggregate_planned",
    "merge_written:2",
    "aggregation_levels_done",
    "output_removed",
    "aggregated",
]


@pytest.fixture
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_simnet(
        tmp_path_factory.mktemp("flaky"),
        accounts=40,
        hosts=2,
        mean_records=25,
        faults="flaky_503,flaky_429",
        statuses="deactivated",
    )
    yield server
    server.stop()


@pytest.mark.parametrize("point", CRASH_POINTS)
def test_crash_then_resume_gives_the_truth(flaky: Server, tmp_path: Path, point: str) -> None:
    args = run_args(
        flaky,
        tmp_path,
        "job",
        "--attempts",
        "1",
        "--retries",
        "3",
        "--retry-backoff",
        "0.05",
        "--batch-size",
        "4",
        "--merge-in-memory",
        "0",  # the streaming merge, whose levels have failpoints of their own
        "--fan-in",
        "2",
    )
    crashed = run_cli(*args, env={"SKYFILL_FAILPOINT": point})
    assert crashed.returncode == -signal.SIGKILL, (point, crashed.stderr)

    resumed = run_cli("resume", "job", "--workdir", str(tmp_path), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    truth = flaky.ready["truth_data"]["repos"]
    want = {did: recs for did, recs in truth_records(flaky.ready["truth_data"]).items() if recs}
    assert records_by_did(tmp_path, "job") == want
    rows = all_records(tmp_path, "job")
    keys = [(r["did"], r["collection"], r["rkey"]) for r in rows]
    assert len(keys) == len(set(keys))
    outcomes = repos(tmp_path, "job")
    assert sorted(outcomes) == sorted(truth)
    assert {d: r["status"] for d, r in outcomes.items()} == {
        d: r["status"] for d, r in truth.items()
    }


def test_a_failing_task_fails_the_job_with_its_reason_and_resume_fixes_it(
    flaky: Server, tmp_path: Path
) -> None:
    args = run_args(
        flaky, tmp_path, "job", "--attempts", "3", "--retry-backoff", "0.05", "--batch-size", "10"
    )
    failed = run_cli(*args, env={"SKYFILL_FAILPOINT": "segment_committed:2:raise"})
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    last = failed.stderr.strip().splitlines()[-1]
    assert "job failed" in last and "failpoint segment_committed reached" in last
    assert "skyfill resume job" in last
    root = tmp_path / "jobs" / "job"
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["status"] == "failed" and "FailpointError" in manifest["error"]
    tasks = [json.loads(p.read_text()) for p in root.glob("tasks/*/manifest.json")]
    broken = [t for t in tasks if t["status"] == "failed"]
    assert len(broken) == 1 and "failpoint" in broken[0]["error"]

    resumed = run_cli("resume", "job", "--workdir", str(tmp_path), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    want = {did: recs for did, recs in truth_records(flaky.ready["truth_data"]).items() if recs}
    assert records_by_did(tmp_path, "job") == want
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["status"] == "completed" and manifest["error"] is None

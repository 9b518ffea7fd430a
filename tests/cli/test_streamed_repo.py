"""Repos over `--stream-repo-bytes` through `skyfill run`: CAR to a file, records decoded
in batches of SKYFILL_STREAM_BATCH_ROWS, each sorted into a file, merged into the item's
segment; exact output, and a kill -9 in the middle of a repo loses nothing."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    Server,
    all_records,
    job_dir,
    records_by_did,
    repos,
    run_args,
    run_cli,
    start_simnet,
    truth_records,
)

STREAMED = {"SKYFILL_STREAM_BATCH_ROWS": "8"}
"""Batches of 8 records: the simnet's repos (~40 records) take several each."""


def _task_metrics(workdir: Path, job_id: str) -> list[dict]:
    tasks = job_dir(workdir, job_id) / "tasks"
    return [
        json.loads(path.read_text())["metrics"] for path in sorted(tasks.glob("*/manifest.json"))
    ]


def _leftovers(workdir: Path, job_id: str) -> list[str]:
    """Files of the streamed path still in the job's tasks."""
    root = job_dir(workdir, job_id) / "tasks"
    return sorted(
        str(p.relative_to(root))
        for pattern in ("**/car-*", "**/batch-*", "**/spilled-*")
        for p in root.glob(pattern)
    )


def _assert_truth(simnet: Server, workdir: Path, job_id: str) -> None:
    truth = simnet.ready["truth_data"]
    want = {did: recs for did, recs in truth_records(truth).items() if recs}
    assert records_by_did(workdir, job_id) == want
    rows = all_records(workdir, job_id)
    keys = [(r["did"], r["collection"], r["rkey"]) for r in rows]
    assert len(keys) == len(set(keys))
    outcomes = repos(workdir, job_id)
    for did, repo in truth["repos"].items():
        if repo["status"] == "ok":
            assert outcomes[did]["status"] == "ok"
            assert outcomes[did]["record_count"] == len(repo["records"])


def test_streamed_repos_give_the_truth_in_several_batches(simnet: Server, tmp_path: Path) -> None:
    args = run_args(simnet, tmp_path, "s1", "--stream-repo-bytes", "1k", "--batch-size", "20")
    result = run_cli(*args, env=STREAMED)
    assert result.returncode == 0, result.stderr
    _assert_truth(simnet, tmp_path, "s1")
    batches = sum(m.get("spilled_batches", 0) for m in _task_metrics(tmp_path, "s1"))
    records = sum(m["records"] for m in _task_metrics(tmp_path, "s1"))
    assert batches >= records / 8 > 10  # every repo over 1 KB went through the batches
    assert _leftovers(tmp_path, "s1") == []


def test_a_kill_in_the_middle_of_a_streamed_repo_loses_nothing(
    simnet: Server, tmp_path: Path
) -> None:
    args = run_args(simnet, tmp_path, "s2", "--stream-repo-bytes", "1k", "--batch-size", "20")
    died = run_cli(*args, env={**STREAMED, "SKYFILL_FAILPOINT": "stream_batch_written:3"})
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert any("batch-" in name for name in _leftovers(tmp_path, "s2"))  # a repo half done

    resumed = run_cli("resume", "s2", "--workdir", str(tmp_path), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    _assert_truth(simnet, tmp_path, "s2")
    assert _leftovers(tmp_path, "s2") == []


@pytest.fixture
def broken(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Repos that are not what they claim (cut short, a block under a wrong CID, a block
    missing) beside sound ones."""
    server = start_simnet(
        tmp_path_factory.mktemp("broken"),
        accounts=16,
        hosts=2,
        mean_records=30,
        faults="truncate,bad_cid,missing_block",
    )
    yield server
    server.stop()


def _outcomes(workdir: Path, job_id: str) -> dict[str, tuple]:
    return {
        did: (r["status"], r["error"], r["record_count"], r["rev"])
        for did, r in repos(workdir, job_id).items()
    }


def test_streamed_and_in_memory_repos_end_alike(broken: Server, tmp_path: Path) -> None:
    flags = ("--attempts", "1", "--retries", "0")
    held = run_cli(*run_args(broken, tmp_path, "held", *flags))
    streamed = run_cli(
        *run_args(broken, tmp_path, "streamed", *flags, "--stream-repo-bytes", "1k"),
        env=STREAMED,
    )
    assert held.returncode == 0 and streamed.returncode == 0, streamed.stderr
    outcomes = _outcomes(tmp_path, "held")
    assert {status for status, *_ in outcomes.values()} == {"ok", "invalid_repo"}
    assert _outcomes(tmp_path, "streamed") == outcomes
    assert records_by_did(tmp_path, "streamed") == records_by_did(tmp_path, "held")
    assert sum(m.get("spilled_batches", 0) for m in _task_metrics(tmp_path, "streamed")) > 10
    assert _leftovers(tmp_path, "streamed") == []


def test_an_oversized_streamed_repo_is_a_per_did_error(simnet: Server, tmp_path: Path) -> None:
    args = run_args(simnet, tmp_path, "s3", "--stream-repo-bytes", "1k", "--max-repo-bytes", "6k")
    result = run_cli(*args, env=STREAMED)
    assert result.returncode == 0, result.stderr
    rows = repos(tmp_path, "s3").values()
    too_large = [r for r in rows if r["error"] and "over the 6144" in r["error"]]
    assert too_large and all(r["status"] == "failed" for r in too_large)
    kept = [r for r in rows if r["status"] == "ok"]
    assert kept and all(r["car_bytes"] <= 6144 for r in kept)
    assert _leftovers(tmp_path, "s3") == []

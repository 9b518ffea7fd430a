"""kill -9 in the middle of a job, then `skyfill resume`: same dataset, no DID fetched twice."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import (
    CliProcess,
    Server,
    all_records,
    job_dir,
    repos,
    run_args,
    run_cli,
    start_cli,
    start_simnet,
)


@pytest.fixture(scope="module")
def network(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_simnet(
        tmp_path_factory.mktemp("killnet"),
        accounts=400,
        hosts=3,
        mean_records=60,
        statuses="deactivated,not_found",
        unknown_dids=3,
    )
    yield server
    server.stop()


def _args(network: Server, workdir: Path, job_id: str) -> list[str]:
    return run_args(network, workdir, job_id, "--batch-size", "10", "--concurrency", "4")


@pytest.fixture(scope="module")
def reference(network: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The workdir of one uninterrupted run of job `job` (the tests compare with it)."""
    workdir = tmp_path_factory.mktemp("reference")
    result = run_cli(*_args(network, workdir, "job"))
    assert result.returncode == 0, result.stderr
    return workdir


def _request_counts(network: Server) -> dict[str, int]:
    url = network.ready["pds"][0] + "/_simnet/requests"
    with urllib.request.urlopen(url) as response:
        return json.loads(response.read())


def _finished_items(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {k for (k,) in conn.execute("SELECT key FROM items WHERE status != 'pending'")}


def _kill_when(process: CliProcess, db: Path, min_done: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the run ended (exit {process.returncode}) before it could be killed")
        try:
            if db.exists() and len(_finished_items(db)) >= min_done:
                process.send_signal(signal.SIGKILL)
                process.wait(10)
                return
        except sqlite3.OperationalError:
            pass  # the database is being created
        time.sleep(0.02)
    process.kill()
    pytest.fail("no progress to kill in")


def _comparable(rows: list[dict]) -> list[tuple]:
    return [tuple(v for k, v in sorted(r.items()) if k != "job_id") for r in rows]


@pytest.mark.parametrize("min_done", [1, 150])
def test_resume_after_sigkill_equals_uninterrupted_run(
    network: Server, reference: Path, tmp_path: Path, min_done: int
) -> None:
    workdir = tmp_path / "killed"
    process = start_cli(
        *_args(network, workdir, "job"),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    db = job_dir(workdir, "job") / "state.sqlite"
    _kill_when(process, db, min_done)
    assert process.returncode == -signal.SIGKILL
    done_before = _finished_items(db)
    assert done_before, "the kill came before any DID was committed"
    requests_before = _request_counts(network)

    resumed = run_cli("resume", "job", "--workdir", str(workdir), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert "Traceback" not in resumed.stderr

    requests_after = _request_counts(network)
    refetched = [d for d in done_before if requests_after.get(d, 0) != requests_before.get(d, 0)]
    assert refetched == []
    assert _comparable(all_records(workdir, "job")) == _comparable(all_records(reference, "job"))
    killed_repos, ref_repos = repos(workdir, "job"), repos(reference, "job")
    assert sorted(killed_repos) == sorted(ref_repos)
    for did, row in ref_repos.items():
        assert (killed_repos[did]["status"], killed_repos[did]["rev"]) == (
            row["status"],
            row["rev"],
        )


def test_resume_of_a_completed_job_changes_nothing(network: Server, reference: Path) -> None:
    # the module's uninterrupted job: the tests that compare with it see it unchanged
    before = all_records(reference, "job")
    requests = _request_counts(network)
    resumed = run_cli("resume", "job", "--workdir", str(reference), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert _request_counts(network) == requests
    assert all_records(reference, "job") == before


def test_ctrl_c_stops_cleanly_and_resume_finishes(network: Server, tmp_path: Path) -> None:
    import os

    workdir = tmp_path / "interrupted"
    process = start_cli(
        *_args(network, workdir, "job"),
        text=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    db = job_dir(workdir, "job") / "state.sqlite"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if db.exists() and len(_finished_items(db)) >= 20:
                break
        except sqlite3.OperationalError:
            pass
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole group
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "skyfill resume job" in stderr and "Traceback" not in stderr
    with sqlite3.connect(db) as conn:
        errors = conn.execute(
            "SELECT error_class FROM items WHERE status != 'pending' AND status != 'ok'"
        ).fetchall()
    assert {e for (e,) in errors} <= {"not_found", "deactivated"}  # nothing failed by the stop
    resumed = run_cli("resume", "job", "--workdir", str(workdir), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    statuses = {r["status"] for r in repos(workdir, "job").values()}
    assert statuses == {"ok", "not_found", "deactivated"}

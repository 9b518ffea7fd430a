"""Job control through the CLI: plan, status --json, cancel, pause, resume, retry --failed."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.helpers import (
    CliProcess,
    Server,
    job_dir,
    repos,
    run_args,
    run_cli,
    start_cli,
    start_simnet,
)


@pytest.fixture
def slow(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One account whose first getRepo never answers: a job that stays busy."""
    server = start_simnet(
        tmp_path_factory.mktemp("slow"),
        accounts=30,
        hosts=2,
        mean_records=20,
        faults="slow_first,flaky_503",
    )
    yield server
    server.stop()


def _run_args(net: Server, workdir: Path, *flags: str) -> list[str]:
    return run_args(net, workdir, "job", *flags)


def _start(net: Server, workdir: Path, *flags: str) -> CliProcess:
    return start_cli(
        *_run_args(net, workdir, *flags),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def _status(workdir: Path) -> dict:
    result = run_cli("status", "job", "--workdir", str(workdir), "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _wait_for(predicate, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    pytest.fail("condition not reached")


def _busy(workdir: Path) -> bool:
    """20 DIDs done, read from the job's state store (`status --json` then says it too)."""
    db = job_dir(workdir, "job") / "state.sqlite"
    if not db.exists():
        return False
    try:
        with closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=0.2)) as conn:
            (done,) = conn.execute(
                "SELECT count(*) FROM items WHERE status != 'pending'"
            ).fetchone()
    except sqlite3.Error:  # the schema may not be there yet
        return False
    return done >= 20


@pytest.mark.parametrize("action", ["cancel", "pause"])
def test_stop_within_seconds_then_resume(slow: Server, tmp_path: Path, action: str) -> None:
    process = _start(
        slow,
        tmp_path,
        "--timeout",
        "120",
        "--attempts",
        "1",
        "--retries",
        "2",
        "--retry-backoff",
        "0.1",
    )
    _wait_for(lambda: _busy(tmp_path))
    live = _status(tmp_path)
    assert live["live"] is True and live["status"] == "running" and live["pending"] > 0
    assert live["done"] >= 20

    started = time.monotonic()
    stopped = run_cli(action, "job", "--workdir", str(tmp_path))
    assert stopped.returncode == 0, stopped.stderr
    _, stderr = process.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert process.returncode == 130 and "skyfill resume job" in stderr
    facts = _status(tmp_path)
    expected = {"cancel": "cancelled", "pause": "paused"}[action]
    assert facts["status"] == expected and facts["live"] is False

    resumed = run_cli("resume", "job", "--workdir", str(tmp_path), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    assert _status(tmp_path)["status"] == "completed"
    assert {r["status"] for r in repos(tmp_path, "job").values()} == {"ok"}


def test_status_json_agrees_with_the_output(slow: Server, tmp_path: Path) -> None:
    result = run_cli(
        *_run_args(
            slow,
            tmp_path,
            "--timeout",
            "1",
            "--attempts",
            "2",
            "--retries",
            "1",
            "--retry-backoff",
            "0.1",
            "--batch-size",
            "7",
        )
    )
    assert result.returncode == 0, result.stderr
    facts = _status(tmp_path)
    rows = repos(tmp_path, "job")
    assert facts["status"] == "completed" and facts["phase"] == "aggregate"
    assert facts["items"] == len(rows) == facts["done"] and facts["pending"] == 0
    by_status: dict[str, int] = {}
    for row in rows.values():
        by_status[row["status"]] = by_status.get(row["status"], 0) + 1
    assert facts["by_status"] == by_status
    assert facts["tasks"]["done"] == facts["tasks"]["total"] >= 5
    listing = run_cli("status", "--workdir", str(tmp_path), "--json")
    assert [j["job_id"] for j in json.loads(listing.stdout)] == ["job"]


def test_retry_failed_after_the_job_completed(slow: Server, tmp_path: Path) -> None:
    result = run_cli(
        *_run_args(slow, tmp_path, "--timeout", "1", "--attempts", "1", "--retries", "0")
    )
    assert result.returncode == 0, result.stderr
    failed = {d for d, r in repos(tmp_path, "job").items() if r["status"] == "failed"}
    assert len(failed) == 2  # slow_first timed out, flaky_503 answered 503

    first = run_cli("retry", "job", "--failed", "--workdir", str(tmp_path), "--progress", "none")
    assert first.returncode == 0, first.stderr
    rows = repos(tmp_path, "job")
    still = {d for d, r in rows.items() if r["status"] == "failed"}
    assert len(still) == 1  # flaky_503 fails twice; slow_first recovered
    second = run_cli("retry", "job", "--failed", "--workdir", str(tmp_path), "--progress", "none")
    assert second.returncode == 0, second.stderr
    rows = repos(tmp_path, "job")
    assert {r["status"] for r in rows.values()} == {"ok"}
    assert rows[still.pop()]["attempts"] == 3
    root = job_dir(tmp_path, "job")
    assert (root / "retries" / "retry-1" / "manifest.json").exists()
    assert (root / "retries" / "retry-2" / "manifest.json").exists()
    nothing = run_cli("retry", "job", "--failed", "--workdir", str(tmp_path))
    assert nothing.returncode == 0 and "nothing to retry" in nothing.stdout


def test_plan_is_a_dry_run(slow: Server, tmp_path: Path) -> None:
    dids = Path(slow.ready["dids"])
    result = run_cli(
        "plan",
        "--dids",
        str(dids),
        "--batch-size",
        "7",
        "--workdir",
        str(tmp_path),
        "--plc-url",
        slow.ready["plc"],
    )
    assert result.returncode == 0, result.stderr
    assert "30 DIDs" in result.stdout and "5 worker tasks" in result.stdout
    assert "estimated requests: 60" in result.stdout
    assert not (tmp_path / "jobs").exists()
    counts = json.loads(
        __import__("urllib.request")
        .request.urlopen(slow.ready["pds"][0] + "/_simnet/requests")
        .read()
    )
    assert counts == {}  # no PDS was contacted

"""`skyfill run` / `resume` through the CLI against the reference TypeScript PDS network.

The reference PDS + PLC are an independent implementation of the AT Protocol: the backfill's
records must equal what the PDS's own `com.atproto.repo.listRecords` returned (the truth file).
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from contextlib import closing
from datetime import datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests import sqltables
from tests.helpers import (
    Server,
    all_records,
    job_dir,
    records_by_did,
    repos,
    run_cli,
    start_cli,
    truth_records,
)

pytestmark = pytest.mark.refpds

NEVER_EXISTED = "did:plc:neverexistedaaaaaaaaaaaa"  # valid did:plc syntax, unknown to the PLC
CLI_TIMEOUT = 120
KILL_DEADLINE = 60


def _truth(refpds: Server) -> dict:
    return refpds.ready["truth_data"]


def _ok_dids(refpds: Server) -> set[str]:
    return {did for did, repo in _truth(refpds)["repos"].items() if repo["status"] == "ok"}


def _expected_records(refpds: Server) -> dict[str, set[tuple[str, str]]]:
    ok = _ok_dids(refpds)
    return {did: recs for did, recs in truth_records(_truth(refpds)).items() if did in ok}


def _run_args(refpds: Server, dids: Path, workdir: Path, job_id: str) -> list[str]:
    return [
        "run",
        "--dids", str(dids),
        "--workdir", str(workdir),
        "--job-id", job_id,
        "--plc-url", refpds.ready["plc"],
    ]  # fmt: skip


def _records_or_empty(workdir: Path, job_id: str) -> dict[str, set[tuple[str, str]]]:
    """records_by_did, accepting a job without any record (no or an empty records folder)."""
    path = job_dir(workdir, job_id) / "output" / "records"
    if not path.exists() or not any(path.rglob("*.parquet")):
        return {}
    return records_by_did(workdir, job_id)


def _repo_rows(workdir: Path, job_id: str) -> list[dict]:
    """Every row of repos.parquet (a dict keyed by DID would hide duplicates)."""
    return pq.read_table(job_dir(workdir, job_id) / "output" / "repos.parquet").to_pylist()


def _comparable(rows: list[dict]) -> list[tuple]:
    """Record rows without job_id (which differs between jobs), sorted."""
    columns = ("did", "collection", "rkey", "uri", "cid", "rev", "created_at", "record")
    return sorted(tuple(row[c] for c in columns) for row in rows)


def _assert_clean_stderr(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "internal error" not in result.stderr, result.stderr[-3000:]


@pytest.fixture(scope="module")
def dids_file(refpds: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every DID of the truth, one that never existed, a comment line and a blank line."""
    path = tmp_path_factory.mktemp("dids") / "dids.txt"
    lines = ["# every account of the reference network, plus one unknown DID"]
    lines += list(_truth(refpds)["repos"])
    lines += ["", NEVER_EXISTED]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def all_dids(refpds: Server) -> set[str]:
    return {*_truth(refpds)["repos"], NEVER_EXISTED}


@pytest.fixture(scope="module")
def backfill(
    refpds: Server, dids_file: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, str, subprocess.CompletedProcess[str]]:
    """One uninterrupted `skyfill run` of every DID: (workdir, job_id, completed process)."""
    workdir = tmp_path_factory.mktemp("work")
    job_id = "e2e-refpds"
    args = [*_run_args(refpds, dids_file, workdir, job_id), "--allow-private-network"]
    result = run_cli(*args, timeout=CLI_TIMEOUT)
    return workdir, job_id, result


def test_run_exits_zero(backfill: tuple[Path, str, subprocess.CompletedProcess[str]]) -> None:
    _, _, result = backfill
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_clean_stderr(result)
    assert "DIDs by status" in result.stdout


def test_records_equal_listrecords_of_the_reference_pds(
    refpds: Server, backfill: tuple[Path, str, subprocess.CompletedProcess[str]]
) -> None:
    workdir, job_id, result = backfill
    assert result.returncode == 0, result.stderr[-3000:]
    got = records_by_did(workdir, job_id)
    expected = _expected_records(refpds)
    assert set(got) == set(expected), "records only for (and for every) ok DID"
    for did, want in expected.items():
        have = got[did]
        assert have == want, (
            f"{did}: {len(have - want)} unexpected, {len(want - have)} missing; "
            f"e.g. {sorted(have ^ want)[:5]}"
        )
    big = max(expected, key=lambda did: len(expected[did]))
    assert len(expected[big]) >= 3000  # 3000 seeded, one post deleted, plus the profile
    # no (did, collection, rkey) twice: the sets above would hide duplicate rows
    rows = all_records(workdir, job_id)
    assert len(rows) == sum(len(recs) for recs in expected.values())
    assert len({(r["did"], r["collection"], r["rkey"]) for r in rows}) == len(rows)


def test_repos_has_one_row_per_did_with_its_outcome(
    refpds: Server,
    all_dids: set[str],
    backfill: tuple[Path, str, subprocess.CompletedProcess[str]],
) -> None:
    workdir, job_id, result = backfill
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _repo_rows(workdir, job_id)
    assert sorted(r["did"] for r in rows) == sorted(all_dids), "exactly one row per DID"
    by_did = repos(workdir, job_id)
    truth = _truth(refpds)["repos"]
    seen_statuses = set()
    for did, repo in truth.items():
        row = by_did[did]
        seen_statuses.add(repo["status"])
        # the truth says not_found for the deleted account (getRepo answers RepoNotFound)
        assert row["status"] == repo["status"], (did, row)
        if repo["status"] == "ok":
            assert row["rev"] == repo["rev"], (did, row)
            assert row["commit_cid"] == repo["commit"], (did, row)
            assert row["record_count"] == len(repo["records"]), (did, row)
            assert row["handle"] == repo["handle"], (did, row)
            assert row["pds"] == repo["pds"], (did, row)
            assert row["car_bytes"] > 0 and row["error"] is None, (did, row)
            assert row["attempts"] >= 1 and row["fetched_at"] is not None, (did, row)
        else:
            assert row["error"], (did, row)
    assert {"ok", "deactivated", "takendown", "not_found"} <= seen_statuses
    assert any(repo.get("deleted") for repo in truth.values())
    unknown = by_did[NEVER_EXISTED]
    assert unknown["status"] == "not_found", unknown
    assert unknown["record_count"] in (None, 0) and unknown["error"], unknown


def test_record_columns_follow_the_output_contract(
    refpds: Server, backfill: tuple[Path, str, subprocess.CompletedProcess[str]]
) -> None:
    workdir, job_id, result = backfill
    assert result.returncode == 0, result.stderr[-3000:]
    truth = _truth(refpds)["repos"]
    rows = all_records(workdir, job_id)
    assert rows
    posts = 0
    for row in rows:
        did, collection, rkey = row["did"], row["collection"], row["rkey"]
        assert row["uri"] == f"at://{did}/{collection}/{rkey}", row
        assert row["rev"] == truth[did]["rev"], row
        assert row["job_id"] == job_id, row
        assert row["cid"].startswith("bafy"), row
        record = json.loads(row["record"])
        assert isinstance(record, dict) and record["$type"] == collection, row
        if collection == "app.bsky.feed.post":
            posts += 1
            created = datetime.fromisoformat(record["createdAt"].replace("Z", "+00:00"))
            assert row["created_at"] == created, row
            assert record["text"].endswith("✓ émoji 🚀"), row  # text survives as UTF-8
        elif collection == "app.bsky.feed.like":
            assert record["subject"]["cid"].startswith("bafy"), row
    assert posts > 0


def test_without_allow_private_network_every_did_fails_with_the_reason(
    refpds: Server, dids_file: Path, all_dids: set[str], tmp_path: Path
) -> None:
    # The PLC (and the PDS hosts) are on localhost: without --allow-private-network the first
    # request of every DID, to the PLC, is refused. The job still completes, and says why.
    job_id = "e2e-private"
    result = run_cli(*_run_args(refpds, dids_file, tmp_path, job_id), timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_clean_stderr(result)
    rows = _repo_rows(tmp_path, job_id)
    assert sorted(r["did"] for r in rows) == sorted(all_dids)
    for row in rows:
        assert row["status"] == "failed", row
        error = (row["error"] or "").lower()
        assert "private" in error or "loopback" in error, row
    assert _records_or_empty(tmp_path, job_id) == {}
    # the user is told why, once, on one line (not once per DID, not as a traceback)
    output = (result.stdout + "\n" + result.stderr).splitlines()
    explained = [line for line in output if "--allow-private-network" in line]
    assert 1 <= len(explained) < len(all_dids), output


def _finished_tasks(root: Path) -> int:
    """Worker tasks finished so far: task-XXXX.done files, or `done` rows in the state store."""
    done_files = len(list((root / "tasks").glob("*/*.done")))
    database = root / "state.sqlite"
    if not database.exists():
        return done_files
    try:
        db = sqlite3.connect(f"file:{database}?mode=ro", uri=True, timeout=0.2)
        with closing(db):
            (count,) = db.execute("SELECT count(*) FROM tasks WHERE status = 'done'").fetchone()
    except sqlite3.Error:  # the schema may not be there yet, or the file is locked
        return done_files
    return max(done_files, count)


def _dids_of_finished_tasks(root: Path) -> set[str]:
    """The DIDs of the batches whose task wrote its .done file."""
    dids: set[str] = set()
    for done in root.glob("tasks/*/*.done"):
        manifest = json.loads((done.parent / "manifest.json").read_text())
        batch = json.loads((root / "batches" / f"{manifest['batch_id']}.json").read_text())
        dids.update(batch["items"])
    return dids


def test_resume_after_sigkill_gives_the_uninterrupted_result(
    refpds: Server,
    dids_file: Path,
    backfill: tuple[Path, str, subprocess.CompletedProcess[str]],
    tmp_path: Path,
) -> None:
    job_id = "e2e-resume"
    root = job_dir(tmp_path, job_id)
    args = [
        *_run_args(refpds, dids_file, tmp_path, job_id),
        "--allow-private-network", "--batch-size", "2", "--concurrency", "2",
    ]  # fmt: skip
    process = start_cli(
        *args,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes its decoders too
    )
    try:
        deadline = time.monotonic() + KILL_DEADLINE
        while process.poll() is None and time.monotonic() < deadline:
            if (root / "state.sqlite").exists() and _finished_tasks(root) >= 1:
                break
            time.sleep(0.01)
        assert process.poll() is None, (
            f"the job ended (exit {process.returncode}) before it could be killed"
        )
        assert time.monotonic() < deadline, "no task finished in time"
        killed_at = time.time()
        os.killpg(process.pid, signal.SIGKILL)  # like a power loss
        process.wait(10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    assert process.returncode == -signal.SIGKILL
    assert not (root / "output" / "repos.parquet").exists(), "killed before the job completed"
    finished = _dids_of_finished_tasks(root)
    assert finished, "a task had finished before the kill"

    result = run_cli("resume", job_id, "--workdir", str(tmp_path), timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_clean_stderr(result)

    workdir, main_id, main = backfill
    assert main.returncode == 0, main.stderr[-3000:]
    resumed = records_by_did(tmp_path, job_id)
    assert resumed == records_by_did(workdir, main_id)
    assert resumed == _expected_records(refpds)
    assert _comparable(all_records(tmp_path, job_id)) == _comparable(all_records(workdir, main_id))
    outcome = ("status", "handle", "pds", "rev", "commit_cid", "record_count")
    got = {did: tuple(row[k] for k in outcome) for did, row in repos(tmp_path, job_id).items()}
    want = {did: tuple(row[k] for k in outcome) for did, row in repos(workdir, main_id).items()}
    assert got == want
    assert len(_repo_rows(tmp_path, job_id)) == len(want)
    # DIDs whose task had finished before the kill were not fetched again by the resume
    rows = repos(tmp_path, job_id)
    for did in finished:
        fetched_at = rows[did]["fetched_at"]
        assert fetched_at is not None and fetched_at.timestamp() <= killed_at, rows[did]


def test_reference_pds_with_its_rate_limits_on_sends_no_429(
    refpds_limited: Server, tmp_path: Path
) -> None:
    """The PDS's own limiter and RateLimit-* headers are on: skyfill reads them, gets no 429,
    and the records still equal the ground truth."""
    truth = refpds_limited.ready["truth_data"]
    dids = tmp_path / "dids.txt"
    dids.write_text("".join(f"{did}\n" for did in truth["repos"]))
    result = run_cli(
        "run",
        "--dids",
        str(dids),
        "--workdir",
        str(tmp_path),
        "--job-id",
        "rl",
        "--plc-url",
        refpds_limited.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert records_by_did(tmp_path, "rl") == {
        d: recs for d, recs in truth_records(truth).items() if recs
    }
    status = run_cli("status", "rl", "--workdir", str(tmp_path), "--json")
    hosts = json.loads(status.stdout)["hosts"]
    pds_hosts = [h for h in hosts if any(url.endswith(h) for url in refpds_limited.ready["pds"])]
    assert len(pds_hosts) == 2, hosts
    assert all(h["rate_limited"] == 0 for h in hosts.values())
    assert all(hosts[h]["server_limit"] == 6000 for h in pds_hosts)  # read from the headers


def test_postgres_sink_matches_listrecords_of_the_reference_pds(
    refpds: Server, dids_file: Path, tmp_path: Path, pg_url: str
) -> None:
    """The same backfill into PostgreSQL: tables equal the truth, row for row."""
    args = [*_run_args(refpds, dids_file, tmp_path, "e2e-pg"), "--allow-private-network"]
    result = run_cli(*args, "--sink", pg_url, "--progress", "none", timeout=CLI_TIMEOUT)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_clean_stderr(result)
    expected = _expected_records(refpds)
    assert sqltables.records_by_did(pg_url) == {d: r for d, r in expected.items() if r}
    rows = sqltables.rows(pg_url, "records")
    assert len(rows) == sum(len(recs) for recs in expected.values())  # no duplicate rows
    truth = _truth(refpds)["repos"]
    post = next(r for r in rows if r["collection"] == "app.bsky.feed.post")
    assert post["record"]["$type"] == "app.bsky.feed.post"  # jsonb, queryable
    assert post["record"]["text"].endswith("✓ émoji 🚀")
    assert post["created_at"] == datetime.fromisoformat(post["record"]["createdAt"])
    repos_rows = {row["did"]: row for row in sqltables.rows(pg_url, "repos")}
    assert set(repos_rows) == {*truth, NEVER_EXISTED}
    for did, repo in truth.items():
        assert repos_rows[did]["status"] == repo["status"], did
        if repo["status"] == "ok":
            assert repos_rows[did]["rev"] == repo["rev"]
            assert repos_rows[did]["record_count"] == len(repo["records"])


def test_from_host_discovers_exactly_the_seeded_accounts(refpds: Server, tmp_path: Path) -> None:
    """listRepos on each PDS host: every account the host holds, once; the deleted one is
    absent, the deactivated and taken-down ones recorded with their status, unfetched."""
    truth = _truth(refpds)["repos"]
    args = ["run", "--workdir", str(tmp_path), "--job-id", "hosts"]
    args += ["--plc-url", refpds.ready["plc"], "--allow-private-network", "--progress", "none"]
    for url in refpds.ready["pds"]:
        args += ["--from-host", url]
    done = run_cli(*args, "--list-limit", "5", timeout=CLI_TIMEOUT)
    assert done.returncode == 0, done.stderr
    rows = _repo_rows(tmp_path, "hosts")
    assert len(rows) == len({r["did"] for r in rows})  # each account once
    got = {r["did"]: r for r in rows}
    expected = {d: r for d, r in truth.items() if r["status"] != "not_found"}  # deleted: absent
    assert set(got) == set(expected)
    for did, repo in expected.items():
        assert got[did]["status"] == repo["status"], did
        assert got[did]["pds"].rstrip("/") == repo["pds"].rstrip("/"), did
    assert _records_or_empty(tmp_path, "hosts") == _expected_records(refpds)


def test_from_host_into_postgresql_twice_leaves_the_tables_unchanged(
    refpds: Server, tmp_path: Path, pg_url: str
) -> None:
    args = ["--plc-url", refpds.ready["plc"], "--allow-private-network", "--progress", "none"]
    for url in refpds.ready["pds"]:
        args += ["--from-host", url]
    first = run_cli("run", "--workdir", str(tmp_path), "--job-id", "pg1", *args, "--sink", pg_url)
    assert first.returncode == 0, first.stderr
    assert sqltables.records_by_did(pg_url) == {
        did: recs for did, recs in _expected_records(refpds).items() if recs
    }
    records = sqltables.rows(pg_url, "records")
    repos_before = {r["did"]: r for r in sqltables.rows(pg_url, "repos")}
    again = run_cli("run", "--workdir", str(tmp_path), "--job-id", "pg2", *args, "--sink", pg_url)
    assert again.returncode == 0, again.stderr
    assert sqltables.rows(pg_url, "records") == records  # not one row rewritten
    repos_after = {r["did"]: r for r in sqltables.rows(pg_url, "repos")}
    assert set(repos_after) == set(repos_before)
    for did, row in repos_after.items():  # only the time of the check moves
        assert {k: v for k, v in row.items() if k != "fetched_at"} == {
            k: v for k, v in repos_before[did].items() if k != "fetched_at"
        }

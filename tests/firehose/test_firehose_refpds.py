"""`skyfill firehose` against the reference PDS (the official TypeScript PDS + PLC):
following it while it writes (creates, updates, deletes, handle changes, deactivations)
and then comparing with the truth it writes on SIGUSR2 is an exact match, also when the
follower was killed with SIGKILL in the middle and started again, and when it splits the
stream over shard processes (`--shards 2`).

Every follower follows the same live network at the same time (`live_run`, see
tests/firehose/live.py `follow_live`): a network writes live only until its truth is
taken, and starting one takes longer than either test."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest

from tests.firehose.live import SHARDS, LiveRun
from tests.firehose.truth import Inactive, compare_parquet, compare_postgres, compare_sqlite
from tests.helpers import run_cli

pytestmark = pytest.mark.refpds


def test_following_live_writes_ends_equal_to_the_truth(live_run: LiveRun) -> None:
    follower = live_run.followers["following"]
    # SIGTERM while live: the batch is finished, the cursor saved, exit 0
    assert follower.returncode == 0, follower.stderr
    done = run_cli(*follower.command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(follower.db, live_run.truth, Inactive.NONE) == []


def test_following_live_writes_with_shards_ends_equal_to_the_truth(live_run: LiveRun) -> None:
    """`--shards 2`: the live stream split by DID over two shard processes, each with its
    cursor in the sink (`host:port#K/2`)."""
    follower = live_run.followers["sharded"]
    # SIGTERM while live: every shard finishes its batch and saves its cursor, exit 0
    assert follower.returncode == 0, follower.stderr
    assert "Traceback" not in follower.stderr
    stopped_at = shard_cursors(follower.db)
    source = live_run.server.ready["pds"][0].split("://", 1)[1]
    assert set(stopped_at) == {f"{source}#{k}/{SHARDS}" for k in range(SHARDS)}
    assert min(stopped_at.values()) > follower.cursors["first"] + 40  # live events applied
    done = run_cli(*follower.command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert " live: " in done.stdout
    assert compare_sqlite(follower.db, live_run.truth, Inactive.NONE) == []
    after = shard_cursors(follower.db)
    assert set(after) == set(stopped_at)
    assert all(after[k] >= stopped_at[k] for k in after)


def shard_cursors(db: Path) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return {s: int(c) for s, c in conn.execute("SELECT source, cursor FROM firehose_cursor")}


def test_killed_follower_restarted_ends_equal_to_the_truth(live_run: LiveRun) -> None:
    follower = live_run.followers["killed"]
    assert follower.cursors["killed_at"] > 30  # SIGKILLed after its batches had begun
    assert follower.returncode == 0, follower.stderr  # the restarted one, by SIGTERM
    done = run_cli(*follower.command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(follower.db, live_run.truth, Inactive.NONE) == []


def test_backfill_then_follow_ends_equal_to_the_truth(live_run: LiveRun) -> None:
    """`skyfill run --follow`: snapshots fetched while the network writes, the stream
    recorded from before the first of them, applied after them, then followed."""
    job = live_run.followers["job"]
    assert job.returncode == 0, job.stderr  # SIGTERM while following
    done = run_cli(*job.command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert "follow follow-job live" in done.stdout
    assert compare_sqlite(job.db, live_run.truth, Inactive.NONE) == []
    shown = run_cli("status", "job", "--workdir", str(job.command[3]), "--json")
    follow = json.loads(shown.stdout)["follow"]
    assert follow["phase"] == "following"
    every = len(live_run.truth["repos"])
    assert follow["repos"] == {"pending": 0, "active": every, "desynchronized": 0}
    assert follow["stream"]["cursor"] >= job.cursors["first"]
    assert follow["stream"]["why_not_active"] == {}
    report = run_cli(
        "report", "job", "--workdir", str(job.command[3]), "--format", "json", "--output", "-"
    )
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["follow"]["repos"] == follow["repos"]
    page = run_cli("report", "job", "--workdir", str(job.command[3]), "--output", "-")
    assert "Stream (--follow)" in page.stdout


def test_backfill_and_follow_into_postgres_killed_in_its_backfill_ends_equal_to_the_truth(
    live_run: LiveRun,
) -> None:
    job = live_run.followers["job_killed"]
    assert job.cursors["exit"] == -signal.SIGKILL  # its failpoint, after its first task
    assert job.returncode == 0, job.stderr  # the resumed one, by SIGTERM while following
    done = run_cli(*job.command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert compare_postgres(job.sink, live_run.truth, inactive=Inactive.NONE) == []


def test_backfill_then_follow_into_parquet_compacts_to_the_truth(
    live_run: LiveRun, tmp_path: Path
) -> None:
    """A Parquet job's stream is an event log beside its output; compacted over the
    job's output (its snapshot), it is the network's state."""
    job = live_run.followers["job_parquet"]
    assert job.returncode == 0, job.stderr
    done = run_cli(*job.command, "--until-live")
    assert done.returncode == 0, done.stderr
    root = job.db / "jobs" / "job_parquet"
    current = tmp_path / "current"
    compact = run_cli(
        "firehose", "compact", str(root / "follow" / "log"), str(current),
        "--snapshot", str(root / "output"),
    )  # fmt: skip
    assert compact.returncode == 0, compact.stderr
    assert compare_parquet(current / "records", live_run.truth, inactive=Inactive.NONE) == []

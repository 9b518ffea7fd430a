"""`skyfill firehose` against the reference PDS (the official TypeScript PDS + PLC):
following it while it writes (creates, updates, deletes, handle changes, deactivations)
and then comparing with the truth it writes on SIGUSR2 is an exact match, also when the
follower was killed with SIGKILL in the middle and started again."""

from __future__ import annotations

import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.firehose.live import stop_writes_and_get_truth
from tests.firehose.truth import Inactive, compare_sqlite
from tests.helpers import SKYFILL, Server, run_cli, wait_until

pytestmark = pytest.mark.refpds


def args(net: Server, workdir: Path, db: Path, *flags: str) -> list[str]:
    return [
        "firehose",
        "--from-host", net.ready["pds"][0],
        "--sink", f"sqlite:///{db}",
        "--workdir", str(workdir),
        "--plc-url", net.ready["plc"],
        "--allow-private-network",
        "--progress", "none",
        "--flush-seconds", "0.5",
        *flags,
    ]  # fmt: skip


def cursor(db: Path) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT max(cursor) FROM firehose_cursor").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


def follow(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([*SKYFILL, *command], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process: subprocess.Popen[bytes], sig: int) -> str:
    if process.poll() is None:
        process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=10)
    return err.decode(errors="replace")


def test_following_live_writes_ends_equal_to_the_truth(live_refpds: Server, tmp_path: Path) -> None:
    db, work = tmp_path / "live.db", tmp_path / "work"
    command = args(live_refpds, work, db, "--since", "all")
    follower = follow(command)
    try:
        first = wait_until(lambda: cursor(db), timeout=60, what="the follower's first batch")
        wait_until(lambda: cursor(db) > first + 40, timeout=60, what="live events applied")
    finally:
        err = stop(follower, signal.SIGTERM)
    assert follower.returncode == 0, err  # SIGTERM: the batch is finished, the cursor saved
    truth = stop_writes_and_get_truth(live_refpds)
    done = run_cli(*command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(db, truth, Inactive.NONE) == []


def test_killed_follower_restarted_ends_equal_to_the_truth(
    live_refpds: Server, tmp_path: Path
) -> None:
    db, work = tmp_path / "live.db", tmp_path / "work"
    command = args(live_refpds, work, db, "--since", "all", "--batch-size", "20")
    follower = follow(command)
    try:
        wait_until(lambda: cursor(db) > 30, timeout=60, what="the follower's batches")
        time.sleep(0.3)  # let it be in the middle of something
    finally:
        stop(follower, signal.SIGKILL)
    killed_at = cursor(db)
    follower = follow(command)  # the same command resumes from the saved cursor
    try:
        wait_until(lambda: cursor(db) > killed_at + 20, timeout=60, what="resumed batches")
    finally:
        err = stop(follower, signal.SIGTERM)
    assert follower.returncode == 0, err
    truth = stop_writes_and_get_truth(live_refpds)
    done = run_cli(*command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(db, truth, Inactive.NONE) == []

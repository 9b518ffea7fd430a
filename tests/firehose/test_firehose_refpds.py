"""`skyfill firehose` against the reference PDS (the official TypeScript PDS + PLC):
following it while it writes (creates, updates, deletes, handle changes, deactivations)
and then comparing with the truth it writes on SIGUSR2 is an exact match, also when the
follower was killed with SIGKILL in the middle and started again.

Both followers follow the same live network at the same time (`live_run`, see
tests/firehose/live.py `follow_live`): a network writes live only until its truth is
taken, and starting one takes longer than either test."""

from __future__ import annotations

import pytest

from tests.firehose.live import LiveRun
from tests.firehose.truth import Inactive, compare_sqlite
from tests.helpers import run_cli

pytestmark = pytest.mark.refpds


def test_following_live_writes_ends_equal_to_the_truth(live_run: LiveRun) -> None:
    follower = live_run.followers["following"]
    # SIGTERM while live: the batch is finished, the cursor saved, exit 0
    assert follower.returncode == 0, follower.stderr
    done = run_cli(*follower.command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(follower.db, live_run.truth, Inactive.NONE) == []


def test_killed_follower_restarted_ends_equal_to_the_truth(live_run: LiveRun) -> None:
    follower = live_run.followers["killed"]
    assert follower.cursors["killed_at"] > 30  # SIGKILLed after its batches had begun
    assert follower.returncode == 0, follower.stderr  # the restarted one, by SIGTERM
    done = run_cli(*follower.command, "--until-live")
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(follower.db, live_run.truth, Inactive.NONE) == []

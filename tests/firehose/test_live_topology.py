"""The live topology on Redis streams (`skyfill ingest` -> `skyfill index`), on the
recorded stream of real signed commits: one ingester, repos added by hand to snapshot,
two index workers of which one is SIGKILLed inside a sink transaction; the PostgreSQL
tables end equal to the truth, every entry acknowledged, and the streams trimmed only
once the group has acknowledged them. deploy/README.md shows the same commands."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.firehose.recording import ServedRecording
from tests.firehose.truth import compare_postgres
from tests.helpers import RedisServer, run_cli, start_cli, wait_until
from tests.pgserver import PostgresServer

PARTITIONS = 4
PREFIX = "skyfill:live:live"


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


def _ingest(fh: ServedRecording, state: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "ingest", "--from-host", fh.host_url, "--state", state, "--allow-private-network",
        "--partitions", str(PARTITIONS), *flags,
    )  # fmt: skip


def _lengths(client: redis.Redis) -> list[int]:
    return [int(client.xlen(f"{PREFIX}:events:{i}")) for i in range(PARTITIONS)]


def test_a_redis_without_an_append_only_file_is_refused(
    fh_served: ServedRecording, redis_url: str
) -> None:
    done = _ingest(fh_served, redis_url, "--until-live")
    assert done.returncode == 2, done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("skyfill: error:")]
    assert "does not keep an append-only file" in line and "Traceback" not in done.stderr


def test_an_ingester_and_two_index_workers_one_killed_end_equal_to_the_truth(
    fh_served: ServedRecording, aof_redis: RedisServer, postgres: PostgresServer
) -> None:
    state, sink = aof_redis.url, postgres.create_database("live_topology")
    client = redis.Redis.from_url(state)
    ingested = _ingest(fh_served, state, "--cursor", "0", "--until-live", "--no-list-repos")
    assert ingested.returncode == 0, ingested.stderr
    written = sum(_lengths(client))
    assert f"{written} events written" in ingested.stdout and written > 2000
    # repos to snapshot, by hand (this host has no listRepos): their events are held
    # while each is fetched whole, and only the newer ones applied after it
    dids = (fh_served.path / "dids.txt").read_text().split()[:8]
    added = run_cli("ingest", "--state", state, *[a for d in dids for a in ("--add-repo", d)])
    assert added.returncode == 0 and "8 repo(s)" in added.stdout, added.stderr
    # no group has read them yet: nothing may be trimmed
    again = _ingest(fh_served, state, "--until-live", "--no-list-repos")
    assert again.returncode == 0 and sum(_lengths(client)) == written, again.stderr

    index = [
        "index", "--sink", sink, "--state", state, "--plc-url", fh_served.plc_url,
        "--allow-private-network", "--until-idle", "2", "--lease-seconds", "3",
        "--batch-size", "100",
    ]  # fmt: skip
    killed = start_cli(
        *index, "--worker-id", "killed", stderr=subprocess.PIPE,
        env={"SKYFILL_FAILPOINT": "stream_applied:4"},
    )  # fmt: skip
    other = None
    try:
        wait_until(lambda: client.get(f"{PREFIX}:lease:0") is not None, timeout=30, what="a lease")
        other = start_cli(*index, "--worker-id", "other", stdout=subprocess.PIPE, text=True)
        assert killed.wait(timeout=60) == -signal.SIGKILL  # inside its 4th transaction
        out, _ = other.communicate(timeout=180)
    finally:
        for process in (killed, other):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert other.returncode == 0, out
    assert "entries reclaimed" in out and " 0 entries reclaimed" not in out
    assert f"partitions {list(range(PARTITIONS))}" in out  # all of them in the end

    assert compare_postgres(sink, fh_served.truth) == []
    for i in range(PARTITIONS):  # every entry acknowledged, each partition's cursor at its end
        assert client.xpending(f"{PREFIX}:events:{i}", "index")["pending"] == 0
        assert client.xpending(f"{PREFIX}:backfill:{i}", "index")["pending"] == 0
    # acknowledged by every group: the ingester trims them now
    time.sleep(0.1)
    trimmed = _ingest(fh_served, state, "--until-live", "--no-list-repos")
    assert trimmed.returncode == 0, trimmed.stderr
    assert sum(_lengths(client)) == 0 and f"{written + 8} entries trimmed" in trimmed.stdout

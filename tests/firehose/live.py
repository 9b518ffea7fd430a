"""The reference PDS network in live mode (`net.mjs --live-writes R`): it keeps writing
after its ready line, and on SIGUSR2 stops writing, writes its truth file and prints
`{"truth": true, "out": PATH, "writes": N}` (see ../shared/refpds/README.md "Live mode").

Writing stops for good at SIGUSR2, so one network serves one live phase: `follow_live`
runs every consumer that has to see live writes at once (the tests' followers, one split
over shard processes, one killed and restarted, and a plain stream reader), then takes the
truth once for all of them."""

from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from tests.firehose.wsclient import read_stream
from tests.helpers import CliProcess, Server, start_cli, wait_until

TRUTH_TIMEOUT = 60
LIVE_OPTIONS = [
    "--accounts", "6", "--records", "10", "--pds", "1",
    "--live-writes", "20", "--live-seconds", "120",
]  # fmt: skip
"""One PDS (one stream), a few accounts; writing stops by itself after 2 minutes."""
SHARDS = 2
"""The processes the `sharded` follower splits the stream over."""


class LiveTruthTimeout(AssertionError):
    """The network did not print its truth line in time after SIGUSR2."""


def _stdout_lines(server: Server) -> queue.Queue[str | None]:
    """The server's further stdout lines, read by a daemon thread (None at EOF); one
    reader per server, kept in `ready` so a second call reuses it."""
    existing = server.ready.get("_lines")
    if isinstance(existing, queue.Queue):
        return existing
    lines: queue.Queue[str | None] = queue.Queue()
    stdout = server.process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    server.ready["_lines"] = lines
    return lines


def stop_writes_and_get_truth(server: Server, timeout: float = TRUTH_TIMEOUT) -> dict[str, Any]:
    """SIGUSR2, then the truth file it names once its `{"truth": true}` line comes; the
    line's `writes` (acknowledged live writes) is added as `_writes`."""
    lines = _stdout_lines(server)
    server.process.send_signal(signal.SIGUSR2)
    try:
        while (line := lines.get(timeout=timeout)) is not None:
            try:
                said = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(said, dict) and said.get("truth"):
                truth = json.loads(Path(said["out"]).read_text())
                return {**truth, "_writes": said.get("writes")}
    except queue.Empty:
        raise LiveTruthTimeout(f"no truth line {timeout} s after SIGUSR2") from None
    raise LiveTruthTimeout(f"the network exited ({server.process.poll()}) before its truth line")


def follower_args(net: Server, workdir: Path, db: Path, *flags: str) -> list[str]:
    """`skyfill firehose` of the network's (one) PDS into a SQLite file."""
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


def run_follow_args(net: Server, workdir: Path, sink: str, job_id: str, *flags: str) -> list[str]:
    """`skyfill run --follow` of the network's (one) PDS into `sink`."""
    return [
        "run",
        "--from-host", net.ready["pds"][0],
        "--follow",
        "--sink", sink,
        "--workdir", str(workdir),
        "--job-id", job_id,
        "--plc-url", net.ready["plc"],
        "--allow-private-network",
        "--progress", "none",
        *flags,
    ]  # fmt: skip


def resume_args(workdir: Path, job_id: str) -> list[str]:
    return ["resume", job_id, "--workdir", str(workdir), "--progress", "none"]


def stream_cursor(workdir: Path, stream_id: str) -> int:
    """A stream's cursor in its own state (0 before its first batch)."""
    state = workdir / "streams" / stream_id / "state.sqlite"
    try:
        with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT max(seq) FROM cursor").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


def pg_cursor(url: str) -> int:
    """A PostgreSQL sink's saved cursor (0 before its first batch)."""
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            row = conn.execute("SELECT max(cursor) FROM firehose_cursor").fetchone()
    except psycopg.Error:
        return 0
    return int(row[0] or 0) if row else 0


def saved_cursor(db: Path) -> int:
    """The follower's saved cursor (0 before its first batch)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT max(cursor) FROM firehose_cursor").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


def shard_cursor(db: Path, shards: int) -> int:
    """The oldest of a sharded follower's saved cursors, one per shard (0 until every
    shard has saved one)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            found = [int(c) for (c,) in conn.execute("SELECT cursor FROM firehose_cursor")]
    except sqlite3.Error:
        return 0
    return min(found) if len(found) == shards else 0


def follow(command: list[str]) -> CliProcess:
    return start_cli(*command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def stop(process: CliProcess, sig: int) -> str:
    """Send `sig` (by PID) and wait; its stderr."""
    if process.poll() is None:
        process.send_signal(sig)
    try:
        _, err = process.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate(timeout=10)
    return err.decode(errors="replace")


@dataclass
class Follower:
    """A `skyfill firehose` that followed the live writes; its last run ended by SIGTERM."""

    command: list[str]
    db: Path
    returncode: int | None = None
    stderr: str = ""
    cursors: dict[str, int] = field(default_factory=dict)
    sink: str = ""
    """Where it writes, when not the SQLite file `db` (a PostgreSQL URL)."""
    """Saved cursors at the moments the phase noted (e.g. `killed_at`)."""


@dataclass
class LiveRun:
    """One live phase of a network: what it was at its ready line (`first`), the truth it
    wrote on SIGUSR2, and the followers that saw its writes as they happened."""

    server: Server
    first: dict[str, Any]
    truth: dict[str, Any]
    followers: dict[str, Follower]
    seen_live: int
    """Messages the plain reader had from the stream before the writes stopped."""


def follow_live(server: Server, root: Path, pg_url: str) -> LiveRun:
    """While the network writes: `following` follows it from the start and is stopped by
    SIGTERM after 40 applied live events; `sharded` likewise, split over two shard
    processes (`--shards 2`), once its oldest shard cursor is 40 past its first; `killed`
    (batches of 20) is SIGKILLed after 30, started again with the same command (it resumes
    from its saved cursor) and stopped by SIGTERM 20 events later; a plain reader sees 150
    messages. Beside them, two backfill jobs that follow (`skyfill run --follow`): `job`
    is stopped by SIGTERM once its stream has applied 20 events; `job_killed` (into
    PostgreSQL at `pg_url`) is SIGKILLed inside its backfill (after its first task,
    batches of 2 DIDs), resumed (`skyfill resume`), and stopped by SIGTERM once its
    stream has applied 10 events; `job_parquet` (the default sink) likewise after 10.
    Then SIGUSR2: the truth. The job followers' `command` is their `skyfill resume`."""
    first = server.ready["truth_data"]
    following = Follower([], root / "following.db")
    following.command = follower_args(server, root / "w1", following.db, "--since", "all")
    sharded = Follower([], root / "sharded.db")
    sharded.command = follower_args(
        server, root / "w6", sharded.db, "--since", "all", "--shards", str(SHARDS)
    )
    killed = Follower([], root / "killed.db")
    killed.command = follower_args(
        server, root / "w2", killed.db, "--since", "all", "--batch-size", "20"
    )
    job, job_killed = Follower([], root / "job.db"), Follower([], root / "w4", sink=pg_url)
    job_parquet = Follower([], root / "w5")  # its `db`: the workdir (a Parquet job)
    job_dirs = {"job": root / "w3", "job_killed": root / "w4", "job_parquet": root / "w5"}
    three = follow(run_follow_args(server, job_dirs["job"], f"sqlite:///{job.db}", "job"))
    five = follow(run_follow_args(server, job_dirs["job_parquet"], "parquet", "job_parquet"))
    four = start_cli(
        *run_follow_args(
            server,
            job_dirs["job_killed"],
            pg_url,
            "job_killed",
            "--batch-size",
            "2",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={"SKYFILL_FAILPOINT": "task_marked_done"},
    )
    job.command = resume_args(job_dirs["job"], "job")
    job_killed.command = resume_args(job_dirs["job_killed"], "job_killed")
    job_parquet.command = resume_args(job_dirs["job_parquet"], "job_parquet")
    one, two = follow(following.command), follow(killed.command)
    six = follow(sharded.command)
    try:
        start = wait_until(
            lambda: saved_cursor(following.db), timeout=60, what="the follower's first batch"
        )
        following.cursors["first"] = start
        sharded.cursors["first"] = wait_until(
            lambda: shard_cursor(sharded.db, SHARDS),
            timeout=60,
            what="every shard's first batch",
        )
        wait_until(lambda: saved_cursor(killed.db) > 30, timeout=60, what="the batches")
        time.sleep(0.3)  # let it be in the middle of something
        stop(two, signal.SIGKILL)
        killed_at = killed.cursors["killed_at"] = saved_cursor(killed.db)
        two = follow(killed.command)  # the same command resumes from the saved cursor
        wait_until(lambda: saved_cursor(following.db) > start + 40, timeout=60, what="live events")
        following.stderr = stop(one, signal.SIGTERM)
        following.returncode = one.returncode
        wait_until(
            lambda: shard_cursor(sharded.db, SHARDS) > sharded.cursors["first"] + 40,
            timeout=60,
            what="live events in every shard's cursor",
        )
        sharded.stderr = stop(six, signal.SIGTERM)
        sharded.returncode = six.returncode
        wait_until(
            lambda: saved_cursor(killed.db) > killed_at + 20, timeout=60, what="resumed batches"
        )
        killed.stderr = stop(two, signal.SIGTERM)
        killed.returncode = two.returncode
        job_killed.cursors["exit"] = four.wait(timeout=60)  # SIGKILLed by its failpoint
        four = follow(job_killed.command)
        _followed(job, three, lambda: saved_cursor(job.db), applied=20)
        _followed(job_killed, four, lambda: pg_cursor(pg_url), applied=10)
        _followed(
            job_parquet,
            five,
            lambda: stream_cursor(job_parquet.db, "follow-job_parquet"),
            applied=10,
        )
        stream = server.ready["pds"][0].replace("http://", "ws://")
        stream += "/xrpc/com.atproto.sync.subscribeRepos"
        seen = len(read_stream(stream, cursor=0, limit=150, idle=5))
    finally:
        for process in (one, two, three, four, five, six):
            if process.poll() is None:
                stop(process, signal.SIGKILL)
    truth = stop_writes_and_get_truth(server)
    followers = {
        "following": following,
        "sharded": sharded,
        "killed": killed,
        "job": job,
        "job_killed": job_killed,
        "job_parquet": job_parquet,
    }
    return LiveRun(server, first, truth, followers, seen)


def _followed(
    follower: Follower, process: CliProcess, cursor: Callable[[], int], applied: int
) -> None:
    """Wait for a following job's stream to save a cursor `applied` seqs past its first
    one, then SIGTERM it."""
    first = wait_until(cursor, timeout=90, what="the job's first stream batch")
    follower.cursors["first"] = first
    wait_until(lambda: cursor() >= first + applied, timeout=60, what="followed events")
    follower.stderr = stop(process, signal.SIGTERM)
    follower.returncode = process.returncode

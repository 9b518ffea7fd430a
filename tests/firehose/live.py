"""The reference PDS network in live mode (`net.mjs --live-writes R`): it keeps writing
after its ready line, and on SIGUSR2 stops writing, writes its truth file and prints
`{"truth": true, "out": PATH, "writes": N}` (see ../shared/refpds/README.md "Live mode").

Writing stops for good at SIGUSR2, so one network serves one live phase: `follow_live`
runs every consumer that has to see live writes at once (the tests' followers, one killed
and restarted, and a plain stream reader), then takes the truth once for all of them."""

from __future__ import annotations

import json
import queue
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.firehose.wsclient import read_stream
from tests.helpers import CliProcess, Server, start_cli, wait_until

TRUTH_TIMEOUT = 60
LIVE_OPTIONS = [
    "--accounts", "6", "--records", "10", "--pds", "1",
    "--live-writes", "20", "--live-seconds", "120",
]  # fmt: skip
"""One PDS (one stream), a few accounts; writing stops by itself after 2 minutes."""


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


def saved_cursor(db: Path) -> int:
    """The follower's saved cursor (0 before its first batch)."""
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute("SELECT max(cursor) FROM firehose_cursor").fetchone()
    except sqlite3.Error:
        return 0
    return int(row[0] or 0)


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


def follow_live(server: Server, root: Path) -> LiveRun:
    """While the network writes: `following` follows it from the start and is stopped by
    SIGTERM after 40 applied live events; `killed` (batches of 20) is SIGKILLed after 30,
    started again with the same command (it resumes from its saved cursor) and stopped by
    SIGTERM 20 events later; a plain reader sees 150 messages. Then SIGUSR2: the truth."""
    first = server.ready["truth_data"]
    following = Follower([], root / "following.db")
    following.command = follower_args(server, root / "w1", following.db, "--since", "all")
    killed = Follower([], root / "killed.db")
    killed.command = follower_args(
        server, root / "w2", killed.db, "--since", "all", "--batch-size", "20"
    )
    one, two = follow(following.command), follow(killed.command)
    try:
        start = wait_until(
            lambda: saved_cursor(following.db), timeout=60, what="the follower's first batch"
        )
        following.cursors["first"] = start
        wait_until(lambda: saved_cursor(killed.db) > 30, timeout=60, what="the batches")
        time.sleep(0.3)  # let it be in the middle of something
        stop(two, signal.SIGKILL)
        killed_at = killed.cursors["killed_at"] = saved_cursor(killed.db)
        two = follow(killed.command)  # the same command resumes from the saved cursor
        wait_until(lambda: saved_cursor(following.db) > start + 40, timeout=60, what="live events")
        following.stderr = stop(one, signal.SIGTERM)
        following.returncode = one.returncode
        wait_until(
            lambda: saved_cursor(killed.db) > killed_at + 20, timeout=60, what="resumed batches"
        )
        killed.stderr = stop(two, signal.SIGTERM)
        killed.returncode = two.returncode
        stream = server.ready["pds"][0].replace("http://", "ws://")
        stream += "/xrpc/com.atproto.sync.subscribeRepos"
        seen = len(read_stream(stream, cursor=0, limit=150, idle=5))
    finally:
        for process in (one, two):
            if process.poll() is None:
                stop(process, signal.SIGKILL)
    truth = stop_writes_and_get_truth(server)
    return LiveRun(server, first, truth, {"following": following, "killed": killed}, seen)

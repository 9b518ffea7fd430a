"""`skyfill firehose --shards N` through the CLI against the recorded signed stream: the
router reads the host and hands each event to the shard process that owns its DID
(crc32 mod N); every shard keeps its own state and its own cursor in the sink
(`host:port#K/N`).

A replay until live equals the truth in SQLite, PostgreSQL and a Parquet event log (parts
per shard, compacted); each shard's cursor ends at the head and each shard saw only its
own repos; a rerun applies nothing; kill -9 of the router ends its shards (PDEATHSIG) and
a restart ends exact; kill -9 of one shard stops the stream in one line naming it and a
restart ends exact; SIGTERM while following saves every shard's cursor; bad frames end
as they do in one process; a stream keeps its shard count (another count is refused in
one line and changes nothing)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
import zlib
from collections.abc import Iterable
from pathlib import Path

import psutil
import psycopg

from tests.firehose.conftest import ServeRecording
from tests.firehose.crafted import craft_recording
from tests.firehose.recording import Recording, ServedRecording, read_frames
from tests.firehose.test_firehose_cli import (
    bad_frame_edits,
    did_of,
    firehose_args,
    rows,
    status,
)
from tests.firehose.truth import (
    compare_parquet,
    compare_postgres,
    compare_sqlite,
    wrong_record_counts,
)
from tests.helpers import CliProcess, assert_one_line_error, run_cli, start_cli, wait_until

EXIT_USAGE = 2
"""The exit code of a UsageError (skyfill.cli.main)."""
SLOW_SINK = {"SKYFILL_FAILPOINT": "stream_applied:every:sleep=0.2"}
"""Each batch's transaction takes 0.2 s more (the shards inherit it): a replay of the
recording lasts a few seconds, time to kill something in the middle of it."""
SMALL_BATCHES = ["--batch-size", "20", "--batch-delay", "0.05"]
REPLAY_TIMEOUT = 60
"""A replay of the recording takes a few seconds: a stream that hangs fails in this."""
HANG_SECONDS = 30
"""A run of the recording that has not ended after this is taken as hung."""


def source_of(served: ServedRecording) -> str:
    """The stream's cursor key in the sink: host:port."""
    return served.host_url.split("://", 1)[1]


def stream_dir(workdir: Path, served: ServedRecording) -> Path:
    return workdir / "streams" / ("firehose-" + source_of(served).replace(":", "-"))


def shard_keys(served: ServedRecording, count: int, seq: int) -> dict[str, int]:
    """Every shard's cursor key (`host:port#K/N`) with `seq`."""
    return {f"{source_of(served)}#{index}/{count}": seq for index in range(count)}


def shard_of(did: str, count: int) -> int:
    """The shard that owns `did`, computed here as the feature describes it."""
    return zlib.crc32(did.encode()) % count


def sqlite_cursors(db: Path) -> dict[str, int]:
    """{source: cursor} of a SQLite sink another process may be writing ({} before)."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            found = conn.execute("SELECT source, cursor FROM firehose_cursor").fetchall()
    except sqlite3.Error:
        return {}
    return {str(source): int(cursor) for source, cursor in found}


def every_shard_past(db: Path, count: int, seq: int) -> bool:
    """Whether all `count` shards have saved a cursor above `seq`."""
    cursors = sqlite_cursors(db)
    return len(cursors) == count and min(cursors.values()) > seq


def shard_dids(workdir: Path, served: ServedRecording, index: int) -> set[str]:
    """The repos shard `index` keeps in its own state."""
    state = stream_dir(workdir, served) / f"shard-{index}" / "state.sqlite"
    with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as conn:
        return {did for (did,) in conn.execute("SELECT did FROM repos")}


def pg_cursors(url: str) -> dict[str, int]:
    with psycopg.connect(url) as conn:
        found = conn.execute("SELECT source, cursor FROM firehose_cursor").fetchall()
    return {str(source): int(cursor) for source, cursor in found}


# -- the shard processes ------------------------------------------------------------------


def shard_processes(router: CliProcess, stream: Path, count: int) -> dict[int, psutil.Process]:
    """The router's shard processes by their index, once all `count` of them hold their
    directory's lock (`<stream>/shard-K/lock`), or those seen before the router ended."""
    locks = {str(stream.resolve() / f"shard-{index}" / "lock"): index for index in range(count)}
    deadline = time.monotonic() + 60
    while True:
        shards: dict[int, psutil.Process] = {}
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(router.pid).children():
                with contextlib.suppress(psutil.Error):
                    for opened in child.open_files():
                        if opened.path in locks:
                            shards[locks[opened.path]] = child
        if len(shards) == count or router.poll() is not None:
            return shards
        assert time.monotonic() < deadline, f"{count} shards of {router.pid} not seen in 60 s"
        time.sleep(0.05)


def hold_feeds(process: psutil.Process) -> list[int]:
    """Writers of every pipe `process` reads (its feed among them), opened here through
    /proc: while the test holds them, the pipes do not end when the router dies."""
    held = []
    for entry in Path(f"/proc/{process.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            if not os.readlink(entry).startswith("pipe:"):
                continue
            info = (Path(f"/proc/{process.pid}/fdinfo") / entry.name).read_text()
            flags = int(info.split("flags:", 1)[1].split()[0], 8)
            if flags & os.O_ACCMODE == os.O_RDONLY:
                held.append(os.open(entry, os.O_WRONLY | os.O_NONBLOCK))
    return held


def running(process: psutil.Process) -> bool:
    """Whether it still runs (a zombie waiting to be reaped has ended)."""
    try:
        return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def stop_all(router: CliProcess, shards: Iterable[psutil.Process]) -> None:
    """SIGKILL, by PID, whatever a test started that still runs (after a failure)."""
    if router.poll() is None:
        router.kill()
        router.wait(10)
    for shard in shards:
        if running(shard):
            with contextlib.suppress(psutil.NoSuchProcess):
                shard.kill()  # psutil refuses a PID reused by another process


def finished(
    router: CliProcess, stderr: Path, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Wait for a started command; what `run_cli` returns (its stderr from `stderr`)."""
    code = router.wait(timeout)
    return subprocess.CompletedProcess(router.args, code, "", stderr.read_text(errors="replace"))


# -- the tests ------------------------------------------------------------------------------


def test_sharded_replay_equals_the_truth_with_a_cursor_per_shard_and_keeps_its_count(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    db, work = tmp_path / "fh.db", tmp_path / "work"
    args = firehose_args(fh_served, work, db, "--since", "all", "--until-live")
    head = fh_served.head_seq
    done = run_cli(*args, "--shards", "2")
    assert done.returncode == 0, done.stderr
    assert " live: " in done.stdout and f"cursor {head}" in done.stdout
    assert compare_sqlite(db, fh_served.truth) == []
    # one cursor per shard, each at the head: the router's ticks move a shard past the
    # events of the other one (the head event is only one shard's)
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, head)
    # each shard kept the repos it owns, and only those: every repo went to one shard
    owned = {index: shard_dids(work, fh_served, index) for index in (0, 1)}
    assert owned[0] | owned[1] == set(fh_served.truth["repos"])
    for index, dids in owned.items():
        assert dids and {shard_of(did, 2) for did in dids} == {index}, index
    facts = status(work, fh_served)
    run = facts["last_run"]
    assert not facts["running"] and run["shards"] == 2
    assert run["received"] == head and run["applied"] > 0 and run["malformed"] == 0
    assert run["cursor"] == head and run["proofs_verified"] > 0

    before = rows(db)
    again = run_cli(*args, "--shards", "2")
    assert again.returncode == 0, again.stderr
    assert rows(db) == before
    assert status(work, fh_served)["last_run"]["applied"] == 0  # every shard at the head
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, head)

    # another shard count: one line naming the count to use, and nothing changed
    stats = status(work, fh_served)["last_run"]
    other = run_cli(*args, "--shards", "3")
    assert_one_line_error(other, EXIT_USAGE, "--shards 2")
    assert rows(db) == before and sqlite_cursors(db) == shard_keys(fh_served, 2, head)
    assert status(work, fh_served)["last_run"] == stats
    assert not (stream_dir(work, fh_served) / "shard-2").exists()


def test_a_stream_run_in_one_process_is_refused_with_shards(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    db, work = tmp_path / "fh.db", tmp_path / "work"
    window = ["--cursor", str(fh_served.head_seq - 200), "--until-live"]
    done = run_cli(*firehose_args(fh_served, work, db, *window, "--shards", "1"))
    assert done.returncode == 0, done.stderr
    assert sqlite_cursors(db) == {source_of(fh_served): fh_served.head_seq}
    before = rows(db)
    sharded = run_cli(*firehose_args(fh_served, work, db, *window, "--shards", "2"))
    assert_one_line_error(sharded, EXIT_USAGE, "--shards 1")
    assert sqlite_cursors(db) == {source_of(fh_served): fh_served.head_seq}
    assert rows(db) == before
    assert not (stream_dir(work, fh_served) / "shard-0").exists()


def test_a_sharded_stream_run_again_without_shards_keeps_its_shards(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    """A stream keeps its shard count: run again without --shards it resumes with its two
    shards (--shards defaults to the count the stream was run with), never in one process
    beside them."""
    db, work = tmp_path / "fh.db", tmp_path / "work"
    window = ["--cursor", str(fh_served.head_seq - 200), "--until-live"]
    done = run_cli(*firehose_args(fh_served, work, db, *window, "--shards", "2"))
    assert done.returncode == 0, done.stderr
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, fh_served.head_seq)
    before = rows(db)
    again = run_cli(*firehose_args(fh_served, work, db, *window))
    assert again.returncode == 0, again.stderr
    last_run = status(work, fh_served)["last_run"]
    assert (last_run.get("shards"), last_run["applied"]) == (2, 0), last_run
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, fh_served.head_seq)
    assert rows(db) == before


def test_kill_9_of_the_router_ends_its_shards_and_a_restart_ends_exact(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    """The test holds a writer of each shard's feed open, so a shard is not ended by its
    feed's end when the router dies: only by the signal it asked for when its
    parent dies (PR_SET_PDEATHSIG, SIGTERM), which makes it save what it applied."""
    db, work, err = tmp_path / "fh.db", tmp_path / "work", tmp_path / "router.err"
    args = firehose_args(fh_served, work, db, "--since", "all", "--until-live", "--shards", "2")
    head = fh_served.head_seq
    shards: dict[int, psutil.Process] = {}
    feeds: list[int] = []
    with err.open("wb") as stderr:
        router = start_cli(
            *args, *SMALL_BATCHES, stdout=subprocess.DEVNULL, stderr=stderr, env=SLOW_SINK
        )
    try:
        shards = shard_processes(router, stream_dir(work, fh_served), 2)
        assert set(shards) == {0, 1}
        feeds = [fd for shard in shards.values() for fd in hold_feeds(shard)]
        assert len(feeds) >= 2
        wait_until(lambda: every_shard_past(db, 2, head // 4), timeout=60, what="both cursors")
        router.send_signal(signal.SIGKILL)
        assert router.wait(10) == -signal.SIGKILL
        wait_until(
            lambda: not any(running(s) for s in shards.values()),
            timeout=30,
            what="the shards of the killed router to end",
        )
    finally:
        for feed in feeds:
            os.close(feed)
        stop_all(router, shards.values())
    killed_at = sqlite_cursors(db)
    assert set(killed_at) == set(shard_keys(fh_served, 2, head))
    assert min(killed_at.values()) < head, killed_at  # killed mid-replay
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(db, fh_served.truth) == []
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, head)


def test_kill_9_of_one_shard_stops_the_stream_in_one_line_and_a_restart_ends_exact(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    db, work, err = tmp_path / "fh.db", tmp_path / "work", tmp_path / "router.err"
    args = firehose_args(fh_served, work, db, "--since", "all", "--until-live", "--shards", "2")
    head = fh_served.head_seq
    shards: dict[int, psutil.Process] = {}
    with err.open("wb") as stderr:
        router = start_cli(
            *args, *SMALL_BATCHES, stdout=subprocess.DEVNULL, stderr=stderr, env=SLOW_SINK
        )
    try:
        shards = shard_processes(router, stream_dir(work, fh_served), 2)
        assert set(shards) == {0, 1}
        saved = wait_until(
            lambda: len(cursors := sqlite_cursors(db)) == 2 and cursors,
            timeout=60,
            what="a cursor of each shard",
        )
        behind = min((0, 1), key=lambda index: saved[f"{source_of(fh_served)}#{index}/2"])
        shards[behind].send_signal(signal.SIGKILL)  # the one with the most left to do
        failed = finished(router, err)
        other = shards[1 - behind]
        wait_until(lambda: not running(other), timeout=30, what="the other shard to end")
    finally:
        stop_all(router, shards.values())
    assert_one_line_error(failed, 1, f"shard {behind} of the stream stopped")
    assert f"shard {1 - behind} " not in failed.stderr
    killed_at = sqlite_cursors(db)[f"{source_of(fh_served)}#{behind}/2"]
    assert killed_at < head  # killed mid-replay
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(db, fh_served.truth) == []
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, head)


def test_sigterm_while_following_saves_every_shard_cursor(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    db, work, err = tmp_path / "fh.db", tmp_path / "work", tmp_path / "router.err"
    args = firehose_args(fh_served, work, db, "--since", "all", "--shards", "2")
    head = fh_served.head_seq
    shards: dict[int, psutil.Process] = {}
    with err.open("wb") as stderr:
        router = start_cli(*args, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        shards = shard_processes(router, stream_dir(work, fh_served), 2)
        assert set(shards) == {0, 1}
        wait_until(
            lambda: sqlite_cursors(db) == shard_keys(fh_served, 2, head),
            timeout=60,
            what="every shard at the head",
        )
        assert router.poll() is None  # following: no --until-live
        router.send_signal(signal.SIGTERM)
        stopped = finished(router, err)
        ended = not any(running(s) for s in shards.values())  # the router waited for them
    finally:
        stop_all(router, shards.values())
    assert stopped.returncode == 0, stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert ended
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, head)
    done = run_cli(*args, "--until-live")
    assert done.returncode == 0, done.stderr
    assert " live: " in done.stdout
    assert compare_sqlite(db, fh_served.truth) == []
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, head)


def test_sharded_parquet_event_log_has_parts_per_shard_and_compacts_to_the_truth(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    log = tmp_path / "log"

    def stream(work: Path, *flags: str) -> None:
        done = run_cli(
            "firehose", "--from-host", fh_served.host_url, "--sink", str(log),
            "--workdir", str(work), "--plc-url", fh_served.plc_url, "--allow-private-network",
            "--progress", "none", "--since", "all", "--until-live", "--shards", "2", *flags,
            timeout=REPLAY_TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    # --batch-delay: transactions of 300 events at most (no group commit), so several parts
    stream(tmp_path / "w1", "--batch-size", "300", "--batch-delay", "0.001")
    parts = sorted((log / "events").glob("date=*/part-*.parquet"))
    assert all(p.with_name(p.name + ".done").exists() for p in parts)
    by_shard = {i: [p for p in parts if p.name.endswith(f".shard-{i}.parquet")] for i in (0, 1)}
    assert len(by_shard[0]) >= 2 and len(by_shard[1]) >= 2
    assert len(by_shard[0]) + len(by_shard[1]) == len(parts)  # every part is one shard's
    for index in (0, 1):
        saved = json.loads((log / f"cursor.shard-{index}.json").read_text())
        assert saved == {f"{source_of(fh_served)}#{index}/2": fh_served.head_seq}
    compact = run_cli("firehose", "compact", str(log), str(tmp_path / "current"))
    assert compact.returncode == 0, compact.stderr
    assert compare_parquet(tmp_path / "current" / "records", fh_served.truth) == []

    # a replay from the start by a stream without the first one's state writes every event
    # again, in other batches (parts that overlap the first ones; re-fetched repos' rows at
    # other seqs and idx): it still compacts to the truth
    stream(tmp_path / "w2", "--reset-cursor", "--batch-size", "700")
    replayed = sorted((log / "events").glob("date=*/part-*.parquet"))
    assert len(replayed) > len(parts)
    again = run_cli("firehose", "compact", str(log), str(tmp_path / "again"))
    assert again.returncode == 0, again.stderr
    assert compare_parquet(tmp_path / "again" / "records", fh_served.truth) == []


def test_a_sharded_replay_with_reset_cursor_applies_nothing(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    """`--reset-cursor` on a stream that holds its state replays it from the start: every
    event is one its repo's state has seen, so nothing is applied (as `"0 applied"` in one
    process, test_firehose_sinks.py). This once killed a shard: the fresh DID look-up of
    a skipped #identity was cancelled (consumer.py `_handle`) while the #sync after it
    waited on the same look-up and got its CancelledError (resolver.py now asks again);
    and when that happened as the router went live, the router hung (it waited for the
    other shard, whose feed it had not closed; `_stop_all` now stops the shards whenever
    routing did not end well). HANG_SECONDS bound the wait."""
    db, work = tmp_path / "fh.db", tmp_path / "work"
    out, err = tmp_path / "replay.out", tmp_path / "replay.err"
    args = firehose_args(fh_served, work, db, "--since", "all", "--until-live", "--shards", "2")
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    before = rows(db)
    shards: dict[int, psutil.Process] = {}
    with out.open("wb") as stdout, err.open("wb") as stderr:
        router = start_cli(*args, "--reset-cursor", stdout=stdout, stderr=stderr)
    try:
        shards = shard_processes(router, stream_dir(work, fh_served), 2)
        with contextlib.suppress(subprocess.TimeoutExpired):
            router.wait(HANG_SECONDS)
        code = router.poll()
    finally:
        stop_all(router, shards.values())
    said = err.read_text(errors="replace")
    assert code == 0 and "Traceback" not in said, (code, said[-3000:])  # code None: it hung
    assert "0 applied" in out.read_text()
    assert rows(db) == before
    assert sqlite_cursors(db) == shard_keys(fh_served, 2, fh_served.head_seq)


def test_sharded_bad_frames_end_as_in_one_process(
    fh_recording: Recording, serve_recording: ServeRecording, tmp_path: Path
) -> None:
    """The bad frames of test_firehose_cli.py's test (garbage, oversized, unknown type,
    #info OutdatedCursor, a bad signature and a CID mismatch repaired by re-fetches), read
    by one process and by two shards: the same rows and the same malformed count."""
    frames = read_frames(fh_recording.path)
    crafted = craft_recording(fh_recording, tmp_path / "crafted", bad_frame_edits(frames))
    served = serve_recording(crafted.path)
    runs = {}
    for name, flags in (("one", []), ("sharded", ["--shards", "2"])):
        db, work = tmp_path / f"{name}.db", tmp_path / name
        done = run_cli(*firehose_args(served, work, db, "--since", "all", "--until-live", *flags))
        assert done.returncode == 0, done.stderr
        assert "Traceback" not in done.stderr
        runs[name] = (db, done.stderr, status(work, served)["last_run"])
    db, stderr, facts = runs["sharded"]
    assert "larger than" in stderr and "bad_signature" in stderr
    assert "no longer keeps the events after seq 0" in stderr  # the #info OutdatedCursor
    assert facts["malformed"] >= 4  # garbage, oversized, bad signature, CID mismatch
    assert facts["malformed"] == runs["one"][2]["malformed"]
    assert facts["resynced"] >= 2  # the two repos whose commit was refused, fetched whole
    assert sqlite_cursors(db) == shard_keys(served, 2, served.head_seq)
    # as in one process: only the repos of the garbage and oversized frames (events lost
    # from the stream) may differ from the truth
    lost = {did_of(frames[9]), did_of(frames[30])}
    mismatches = compare_sqlite(db, served.truth)
    assert [m for m in mismatches if not any(did in m for did in lost)] == []
    assert rows(db) == rows(runs["one"][0])


def test_sharded_into_postgresql_equals_the_truth(
    fh_served: ServedRecording, pg_url: str, tmp_path: Path
) -> None:
    """Three shards writing one database at once."""

    def stream(work: Path, *flags: str) -> None:
        done = run_cli(
            "firehose", "--from-host", fh_served.host_url, "--sink", pg_url,
            "--workdir", str(work), "--plc-url", fh_served.plc_url, "--allow-private-network",
            "--progress", "none", "--since", "all", "--until-live", "--shards", "3", *flags,
            timeout=REPLAY_TIMEOUT,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr

    stream(tmp_path / "w1")
    assert compare_postgres(pg_url, fh_served.truth) == []
    assert pg_cursors(pg_url) == shard_keys(fh_served, 3, fh_served.head_seq)
    assert wrong_record_counts(pg_url) == 0  # kept by difference, by three writers
    # a replay from the start by a stream without that state: every event written again by
    # three writers at once (the rows of re-fetched repos erased and fetched again)
    stream(tmp_path / "w2", "--reset-cursor")
    assert compare_postgres(pg_url, fh_served.truth) == []
    assert pg_cursors(pg_url) == shard_keys(fh_served, 3, fh_served.head_seq)

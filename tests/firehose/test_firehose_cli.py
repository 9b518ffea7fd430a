"""`skyfill firehose` through the CLI against a recorded signed stream (fhserve.py, real
commits of the reference @atproto/repo): replay from 0 to the head equals the truth, a
second run changes nothing, kill -9 mid-replay and a restart end in the same state, bad
frames are skipped or repaired, a window starts where it should, and refusals are one line."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
from pathlib import Path

import pytest

from skyfill.firehose.consumer import CHUNK_FRAMES
from tests.firehose.conftest import ServeRecording
from tests.firehose.crafted import (
    Edit,
    Where,
    bad_signature_frame,
    cid_mismatch_frame,
    craft_recording,
    decode_frame,
    find_frame,
    garbage_frame,
    outdated_cursor_frame,
    oversized_frame,
    unknown_type_frame,
)
from tests.firehose.recording import Frame, Recording, ServedRecording, read_frames, start_logged
from tests.firehose.truth import compare_sqlite
from tests.helpers import assert_one_line_error, free_port, run_cli, start_cli, wait_until


def firehose_args(served: ServedRecording, workdir: Path, db: Path, *flags: str) -> list[str]:
    return [
        "firehose",
        "--from-host", served.host_url,
        "--sink", f"sqlite:///{db}",
        "--workdir", str(workdir),
        "--plc-url", served.plc_url,
        "--allow-private-network",
        "--progress", "none",
        *flags,
    ]  # fmt: skip


def status(workdir: Path, served: ServedRecording) -> dict:
    stream_id = "firehose-" + served.host_url.split("://")[1].replace(":", "-")
    done = run_cli("status", stream_id, "--workdir", str(workdir), "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def rows(db: Path) -> set[tuple]:
    with sqlite3.connect(db) as conn:
        return set(conn.execute("SELECT did, collection, rkey, cid, rev, record FROM records"))


def test_replay_all_until_live_equals_the_truth_and_a_rerun_changes_nothing(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    db, work = tmp_path / "fh.db", tmp_path / "work"
    done = run_cli(*firehose_args(fh_served, work, db, "--since", "all", "--until-live"))
    assert done.returncode == 0, done.stderr
    assert " live: " in done.stdout and f"cursor {fh_served.head_seq}" in done.stdout
    assert compare_sqlite(db, fh_served.truth) == []
    facts = status(work, fh_served)
    assert facts["cursor"] == fh_served.head_seq and not facts["running"]
    assert facts["last_run"]["malformed"] == 0
    assert facts["last_run"]["proofs_verified"] > 0  # sync 1.1 inversion ran
    with sqlite3.connect(db) as conn:  # one cursor per shard (one per CPU by default)
        saved = conn.execute("SELECT cursor FROM firehose_cursor").fetchall()
    assert saved and set(saved) == {(fh_served.head_seq,)}

    before = rows(db)
    again = run_cli(*firehose_args(fh_served, work, db, "--since", "all", "--until-live"))
    assert again.returncode == 0, again.stderr
    assert rows(db) == before
    assert status(work, fh_served)["last_run"]["applied"] == 0  # resumed at the head


def test_a_slow_sink_gets_fewer_larger_transactions_unless_batches_are_spaced(
    fh_served: ServeRecording, tmp_path: Path
) -> None:
    """While the sink writes a batch, the next one grows (up to 8x --batch-size) instead of
    the stream waiting; with --batch-delay every transaction keeps to --batch-size (a batch
    is cut after the chunk of messages that reaches it: CHUNK_FRAMES more at most)."""
    slow = {"SKYFILL_FAILPOINT": "stream_applied:every:sleep=0.3"}
    runs = {}
    for name, flags in (("grouped", []), ("spaced", ["--batch-delay", "0.001"])):
        db, work = tmp_path / f"{name}.db", tmp_path / name
        args = firehose_args(fh_served, work, db, "--since", "all", "--until-live", *flags)
        done = run_cli(*args, "--batch-size", "100", env=slow)
        assert done.returncode == 0, done.stderr
        assert compare_sqlite(db, fh_served.truth) == []
        runs[name] = status(work, fh_served)["last_run"]
    events = runs["spaced"]["received"]
    assert runs["spaced"]["batches"] >= events / (100 + CHUNK_FRAMES)
    assert events / (800 + CHUNK_FRAMES) <= runs["grouped"]["batches"] < runs["spaced"]["batches"]


def test_kill_9_mid_replay_and_a_restart_end_exact(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    db, work = tmp_path / "fh.db", tmp_path / "work"
    args = firehose_args(fh_served, work, db, "--since", "all", "--until-live")
    slow = [*args, "--batch-size", "40", "--batch-delay", "0.05"]
    process = start_cli(*slow, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_until(
            lambda: (status_cursor(db) or 0) > fh_served.head_seq // 4, timeout=60, what="a cursor"
        )
        process.send_signal(signal.SIGKILL)
        process.wait(10)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(10)
    killed_at = status_cursor(db)
    assert killed_at is not None and killed_at < fh_served.head_seq
    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    assert compare_sqlite(db, fh_served.truth) == []
    assert status(work, fh_served)["cursor"] == fh_served.head_seq


def _peek_value(db: Path, query: str) -> int | None:
    """One value from a SQLite file another process is writing (None: not there yet)."""
    if not db.exists():
        return None
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            row = conn.execute(query).fetchone()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def status_cursor(db: Path) -> int | None:
    """The stream's cursor in the sink: the oldest of its shards' (where it resumes)."""
    return _peek_value(db, "SELECT min(cursor) FROM firehose_cursor")


def desynchronized(work: Path) -> int | None:
    """Repos the stream (all its shards) has saved as waiting for a re-fetch (None: no
    state yet)."""
    found = [*work.glob("streams/*/state.sqlite"), *work.glob("streams/*/shard-*/state.sqlite")]
    query = "SELECT count(*) FROM repos WHERE phase != 'active'"
    counts = [_peek_value(path, query) for path in found]
    known = [c for c in counts if c is not None]
    return sum(known) if known else None


def test_bad_frames_are_skipped_and_bad_commits_repaired_by_a_refetch(
    fh_recording: Recording, serve_recording: ServeRecording, tmp_path: Path
) -> None:
    frames = read_frames(fh_recording.path)
    crafted = craft_recording(fh_recording, tmp_path / "crafted", bad_frame_edits(frames))
    served = serve_recording(crafted.path)
    db, work = tmp_path / "fh.db", tmp_path / "work"
    done = run_cli(*firehose_args(served, work, db, "--since", "all", "--until-live"))
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    facts = status(work, served)["last_run"]
    assert facts["malformed"] >= 4  # garbage, oversized, bad signature, CID mismatch
    assert facts["resynced"] >= 2  # the two repos whose commit was refused, fetched whole
    assert "larger than" in done.stderr and "bad_signature" in done.stderr
    assert "no longer keeps the events after seq 0" in done.stderr  # the #info OutdatedCursor
    # the two refused commits were repaired by fetching their repos whole; the events of
    # the garbage and oversized frames are lost from the stream, so only their repos may
    # differ (when no later commit of theirs showed the gap)
    lost = {did_of(frames[9]), did_of(frames[30])}
    mismatches = compare_sqlite(db, served.truth)
    assert [m for m in mismatches if m.split(":", 3)[:3] and not any(d in m for d in lost)] == []


def bad_frame_edits(frames: list[Frame]) -> list[Edit]:
    """The bad frames of the test above (also sent to a sharded stream, test_shards.py): an
    #info OutdatedCursor, garbage (seq 10), an unknown type after seq 20, an oversized frame
    (seq 31), a commit with a bad signature and one whose block does not match its CID."""
    signed = find_frame(frames, "#commit", nth=40, min_ops=1)
    tampered = find_frame(frames, "#commit", nth=70, min_ops=1)
    return [
        Edit(1, outdated_cursor_frame(), Where.BEFORE),
        Edit(10, garbage_frame(100)),
        Edit(20, unknown_type_frame(20, "#foo"), Where.AFTER),
        Edit(31, oversized_frame(frames[30].message)),
        Edit(signed.seq, bad_signature_frame(signed.message)),
        Edit(tampered.seq, cid_mismatch_frame(tampered.message)),
    ]


def did_of(frame: object) -> str:
    body = decode_frame(frame.message)[1]  # type: ignore[attr-defined]
    return str(body.get("repo") or body.get("did"))


def test_since_starts_at_the_first_event_inside_the_window(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    frames = read_frames(fh_served.path)
    middle = frames[len(frames) // 2]
    when = decode_frame(middle.message)[1]["time"]
    db, work = tmp_path / "fh.db", tmp_path / "work"
    done = run_cli(*firehose_args(fh_served, work, db, "--since", when, "--until-live"))
    assert done.returncode == 0, done.stderr
    received = status(work, fh_served)["last_run"]["received"]
    first_inside = min(f.seq for f in frames if decode_frame(f.message)[1].get("time", "") >= when)
    assert received == fh_served.head_seq - first_inside + 1


def test_a_cursor_above_the_head_is_refused_in_one_line(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    cursor = str(fh_served.head_seq + 1000)
    done = run_cli(*firehose_args(fh_served, tmp_path, tmp_path / "x.db", "--cursor", cursor))
    assert_one_line_error(done, 1, "in its future", "--reset-cursor")


def test_bad_flags_are_one_line_errors(tmp_path: Path) -> None:
    no_sink = run_cli("firehose", "--from-host", "http://127.0.0.1:1", "--workdir", str(tmp_path))
    assert_one_line_error(no_sink, 2, "give a sink")
    bad_host = run_cli("firehose", "--from-host", "ftp://x", "--sink", "sqlite:///x.db")
    assert_one_line_error(bad_host, 2, "from-host must be an http(s) URL")
    bad_since = run_cli(
        "firehose", "--from-host", "http://h", "--sink", "sqlite:///x.db", "--since", "soon"
    )
    assert bad_since.returncode == 2 and "not a window" in bad_since.stderr


@pytest.mark.parametrize("shards", ["1", "2"])
def test_a_window_on_a_host_that_is_not_there_is_a_one_line_error(
    tmp_path: Path, shards: str
) -> None:
    """--since needs the host's events to find where the window starts: with no host
    there, the stream stops in one line (its shards too: none is left waiting)."""
    url = f"http://127.0.0.1:{free_port()}"
    done = run_cli(
        "firehose", "--from-host", url, "--sink", str(tmp_path / "log"),
        "--workdir", str(tmp_path / "w"), "--allow-private-network", "--since", "1d",
        "--until-live", "--progress", "none", "--shards", shards, timeout=60,
    )  # fmt: skip
    assert_one_line_error(done, 1, "no stream at")
    assert "internal error" not in done.stderr and "never retrieved" not in done.stderr


def test_a_dropped_connection_is_reconnected_from_the_cursor(
    fh_recording: Recording, serve_recording: ServeRecording, tmp_path: Path
) -> None:
    served = serve_recording(fh_recording)
    db, work = tmp_path / "fh.db", tmp_path / "work"
    args = firehose_args(served, work, db, "--since", "all", "--batch-size", "50")
    follower = start_cli(
        *args, "--batch-delay", "0.05", stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        wait_until(lambda: (status_cursor(db) or 0) > 200, timeout=60, what="a first cursor")
        command = list(served.stream.process.args)  # type: ignore[arg-type]
        served.stream.stop()  # the host goes away mid-stream ...
        served.stream = start_logged(command, served.path / "fhserve2.log")  # ... and comes back
        wait_until(
            lambda: status_cursor(db) == served.head_seq and not desynchronized(work),
            timeout=90,
            what="the head after it, and every re-fetch applied",
        )
    finally:
        follower.send_signal(signal.SIGTERM)
        _, err = follower.communicate(timeout=30)
    assert follower.returncode == 0, err
    assert b"reconnecting after seq" in err
    assert compare_sqlite(db, served.truth) == []

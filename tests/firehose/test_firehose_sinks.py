"""The same recorded stream into PostgreSQL (a real server) and into a Parquet event log
(then `skyfill firehose compact`, alone and over a backfill's output): each equals the
truth, and a replay changes nothing."""

from __future__ import annotations

from pathlib import Path

import psycopg

from tests.firehose.recording import ServedRecording
from tests.firehose.truth import compare_parquet, compare_postgres, wrong_record_counts
from tests.helpers import run_cli


def stream(served: ServedRecording, workdir: Path, sink: str, *flags: str) -> str:
    done = run_cli(
        "firehose", "--from-host", served.host_url, "--sink", sink,
        "--workdir", str(workdir), "--plc-url", served.plc_url, "--allow-private-network",
        "--progress", "none", "--since", "all", "--until-live", *flags,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_into_postgresql_equals_the_truth_and_a_replay_changes_nothing(
    fh_served: ServedRecording, pg_url: str, tmp_path: Path
) -> None:
    stream(fh_served, tmp_path / "w1", pg_url)
    assert compare_postgres(pg_url, fh_served.truth) == []
    assert wrong_record_counts(pg_url) == 0  # kept by difference, batch after batch
    with psycopg.connect(pg_url) as conn:
        before = conn.execute("SELECT did, collection, rkey, cid, rev, xmin::text FROM records")
        snapshot = sorted(before.fetchall())
        cursor = conn.execute("SELECT cursor FROM firehose_cursor").fetchall()
    assert cursor and set(cursor) == {(fh_served.head_seq,)}  # one per shard
    # a forced replay from 0 (--reset-cursor) rewrites no row (xmin unchanged)
    assert "0 applied" in stream(fh_served, tmp_path / "w1", pg_url, "--reset-cursor")
    with psycopg.connect(pg_url) as conn:
        after = conn.execute("SELECT did, collection, rkey, cid, rev, xmin::text FROM records")
        assert sorted(after.fetchall()) == snapshot
    # a new workdir (no stream state): it starts from the sink's own cursor, at the head
    assert "0 events" in stream(fh_served, tmp_path / "w2", pg_url)
    # and a replay without the stream's state still ends equal to the truth (rows of repos
    # deactivated and reactivated in the window are erased and fetched again on the way)
    stream(fh_served, tmp_path / "w3", pg_url, "--cursor", "0")
    assert compare_postgres(pg_url, fh_served.truth) == []


def test_parquet_event_log_compacts_to_the_truth(
    fh_served: ServedRecording, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    # --batch-delay: transactions of 500 events each (no group commit), so several parts
    stream(fh_served, tmp_path / "w", str(log), "--batch-size", "500", "--batch-delay", "0.001")
    parts = sorted((log / "events").glob("date=*/part-*.parquet"))
    assert len(parts) >= 4 and all(p.with_name(p.name + ".done").exists() for p in parts)
    done = run_cli("firehose", "compact", str(log), str(tmp_path / "current"))
    assert done.returncode == 0, done.stderr
    assert compare_parquet(tmp_path / "current" / "records", fh_served.truth) == []

    # a replay appends overlapping parts; compaction de-duplicates them
    stream(fh_served, tmp_path / "w", str(log), "--reset-cursor", "--batch-size", "700")
    done = run_cli("firehose", "compact", str(log), str(tmp_path / "again"))
    assert done.returncode == 0, done.stderr
    assert compare_parquet(tmp_path / "again" / "records", fh_served.truth) == []


def test_compact_over_a_backfill_snapshot(fh_served: ServedRecording, tmp_path: Path) -> None:
    work = tmp_path / "work"
    backfill = run_cli(
        "run", "--dids", str(fh_served.path / "dids.txt"), "--workdir", str(work),
        "--job-id", "snap", "--plc-url", fh_served.plc_url, "--allow-private-network",
        "--progress", "none",
    )  # fmt: skip
    assert backfill.returncode == 0, backfill.stderr
    log = tmp_path / "log"
    stream(fh_served, tmp_path / "w", str(log))
    out = tmp_path / "current"
    snapshot = work / "jobs" / "snap" / "output"
    done = run_cli("firehose", "compact", str(log), str(out), "--snapshot", str(snapshot))
    assert done.returncode == 0, done.stderr
    assert compare_parquet(out / "records", fh_served.truth) == []


def test_compact_of_an_empty_directory_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    done = run_cli("firehose", "compact", str(tmp_path / "empty"), str(tmp_path / "out"))
    assert done.returncode == 2 and "no event log parts" in done.stderr
    assert "Traceback" not in done.stderr

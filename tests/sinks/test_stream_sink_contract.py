"""The stream sinks' contract, over SQLite, a real PostgreSQL, the Parquet event log
(read back through `compact`) and Kafka (the topics read back and folded by key): changes
are applied by rev (an older change after a newer one is skipped), a replayed batch
changes nothing, a reset drops the repo's rows at or below its rev, an erase drops all of
them, the cursor is saved with the rows (a batch that fails half-way leaves neither; not
Kafka, whose cursor is the stream's state), record_count follows, and a table a backfill
wrote is kept current by the stream (not Kafka: README, "Into Kafka")."""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pytest

from skyfill.failpoints import FailpointError
from skyfill.sinks.changes import (
    ChangeBatch,
    RecordDelete,
    RecordPut,
    RepoReset,
    RepoUpdate,
    StreamSink,
)
from skyfill.sinks.compact import compact
from skyfill.sinks.exceptions import SinkUrlError, SinkWriteError
from skyfill.sinks.factory import open_sink, open_stream_sink
from skyfill.sinks.kafka_url import parse_kafka_url
from skyfill.sinks.parquet import ParquetSink
from tests import sqltables
from tests.kafkabroker import KafkaBroker, fold, read_topic
from tests.sinks.test_sink_contract import record, repo, write

SOURCE = "pds.test:443"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
TIME = "2025-03-01T12:00:00.000Z"
POST = "app.bsky.feed.post"
A, B = "did:plc:aaaa", "did:plc:bbbb"

Row = tuple[str, str]  # (cid, rev)


@dataclass
class Target:
    """A stream sink of one kind and how to read back its current state."""

    kind: str
    url: str
    tmp: Path

    def open(self) -> StreamSink:
        state = self.tmp / f"state-{hashlib.sha1(self.url.encode()).hexdigest()[:8]}"
        return open_stream_sink(self.url, stream_id="stream-1", state_dir=state)

    def _kafka_rows(self, table: str) -> list[dict[str, Any]]:
        """A topic folded by key (records: the record's JSON text, as the SQL tables
        hold it)."""
        spec = parse_kafka_url(self.url)
        topic = spec.topic if table == "records" else spec.repos_topic
        rows = [m.json() for m in fold(read_topic(spec.bootstrap[0], topic)).values()]
        if table == "repos":
            for row in rows:
                row["fetched_at"] = row["fetched_at"] and datetime.fromisoformat(row["fetched_at"])
        return rows

    def _compacted(self, snapshot: Path | None = None) -> Path:
        out = self.tmp / f"compacted-{time.monotonic_ns()}"
        compact(Path(self.url), out, snapshot)
        return out

    def records(self, snapshot: Path | None = None) -> dict[tuple[str, str], Row]:
        """{(did, rkey): (cid, rev)} of the sink's current records."""
        if self.kind == "parquet":
            rows = _parquet_rows(self._compacted(snapshot), "records")
        elif self.kind == "kafka":
            rows = self._kafka_rows("records")
        else:
            rows = sqltables.rows(self.url, "records")
        return {(r["did"], r["rkey"]): (r["cid"], r["rev"]) for r in rows}

    def repos(self, snapshot: Path | None = None) -> dict[str, dict[str, Any]]:
        if self.kind == "parquet":
            rows = _parquet_rows(self._compacted(snapshot), "repos")
        elif self.kind == "kafka":
            rows = self._kafka_rows("repos")
        else:
            rows = sqltables.rows(self.url, "repos")
        return {r["did"]: r for r in rows}

    def job_ids(self) -> set[str]:
        if self.kind == "parquet":
            return {r["job_id"] for r in _parquet_rows(self._compacted(), "records")}
        if self.kind == "kafka":
            return {r["job_id"] for r in self._kafka_rows("records")}
        return {r["job_id"] for r in sqltables.rows(self.url, "records")}


def _parquet_rows(out: Path, table: str) -> list[dict[str, Any]]:
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    if table == "repos":
        return pq.read_table(out / "repos.parquet").to_pylist()
    return ds.dataset(out / "records", format="parquet", partitioning="hive").to_table().to_pylist()


@pytest.fixture(params=["sqlite", "postgresql", "parquet", "kafka"])
def target(request: pytest.FixtureRequest, tmp_path: Path) -> Target:
    if request.param == "sqlite":
        return Target("sqlite", f"sqlite:///{tmp_path}/stream.db", tmp_path)
    if request.param == "parquet":
        return Target("parquet", str(tmp_path / "log"), tmp_path)
    if request.param == "kafka":
        broker: KafkaBroker = request.getfixturevalue("kafka")
        return Target("kafka", broker.url(broker.topic("contract")), tmp_path)
    return Target("postgresql", request.getfixturevalue("pg_url"), tmp_path)


def put(seq: int, did: str, rkey: str, cid: str, rev: str) -> RecordPut:
    record = orjson.dumps({"$type": POST, "text": cid, "createdAt": T0.isoformat()}).decode()
    return RecordPut(seq, TIME, did, POST, rkey, cid, rev, record, T0)


def delete(seq: int, did: str, rkey: str, rev: str) -> RecordDelete:
    return RecordDelete(seq, TIME, did, POST, rkey, rev)


def hello(seq: int, did: str, rev: str | None = None) -> RepoUpdate:
    return RepoUpdate(seq, TIME, did, "ok", rev=rev, commit_cid=rev and f"c-{rev}",
                      handle=f"{did[-4:]}.test", pds="https://pds.test")  # fmt: skip


def batch(cursor: int, *changes: Any) -> ChangeBatch:
    return ChangeBatch(SOURCE, cursor, list(changes))


def apply(target: Target, *batches: ChangeBatch) -> None:
    sink = target.open()
    try:
        sink.check()
        for b in batches:
            sink.apply(b)
    finally:
        sink.close()


def test_puts_updates_and_deletes_by_rev(target: Target) -> None:
    apply(
        target,
        batch(1, hello(1, A), put(1, A, "p1", "c1", "3r01"), put(1, A, "p2", "c2", "3r01")),
        batch(2, put(2, A, "p1", "c1b", "3r02"), delete(2, A, "p2", "3r02")),
    )
    assert target.records() == {(A, "p1"): ("c1b", "3r02")}


def test_a_keys_changes_within_one_batch_keep_their_order(target: Target) -> None:
    apply(
        target,
        batch(1, hello(1, A),
              put(1, A, "p1", "c1", "3r01"), delete(2, A, "p1", "3r02"),
              put(2, A, "p2", "c2", "3r02"), put(3, A, "p1", "c1c", "3r03"),
              delete(3, A, "p2", "3r03"), delete(4, A, "p3", "3r04"),
              put(5, A, "p3", "c3", "3r05"), delete(6, A, "p4", "3r06")),
    )  # fmt: skip
    assert target.records() == {(A, "p1"): ("c1c", "3r03"), (A, "p3"): ("c3", "3r05")}


def test_puts_of_one_key_in_one_run_leave_the_newest(target: Target) -> None:
    """Puts of a key, with no delete between them, travel in one run (PostgreSQL: one
    statement from a COPY): whatever their order, the newest rev is what stays."""
    apply(
        target,
        batch(1, hello(1, A), put(1, A, "p1", "c1", "3r01"), put(2, A, "p1", "c2", "3r02"),
              put(3, A, "p2", "n3", "3r03"), put(3, A, "p2", "o2", "3r02")),
        batch(2, put(4, A, "p1", "c3", "3r03"), put(5, A, "p1", "c0", "3r00"),
              put(5, A, "p3", "x", "3r05")),
    )  # fmt: skip
    assert target.records() == {
        (A, "p1"): ("c3", "3r03"),
        (A, "p2"): ("n3", "3r03"),
        (A, "p3"): ("x", "3r05"),
    }


def test_an_older_change_after_a_newer_one_is_skipped(target: Target) -> None:
    apply(
        target,
        batch(1, hello(1, A), put(1, A, "p1", "new", "3r05"), put(1, A, "p2", "kept", "3r05")),
        batch(2, put(2, A, "p1", "old", "3r03"), delete(2, A, "p2", "3r04")),
        batch(3, put(3, A, "p1", "same-rev", "3r05")),  # the same rev is not newer either
    )
    assert target.records() == {(A, "p1"): ("new", "3r05"), (A, "p2"): ("kept", "3r05")}


def test_a_replayed_batch_changes_nothing(target: Target) -> None:
    first = batch(1, hello(1, A, "3r01"), put(1, A, "p1", "c1", "3r01"))
    second = batch(2, put(2, A, "p1", "c2", "3r02"), put(2, A, "p2", "c3", "3r02"))
    apply(target, first, second)
    before = target.records()
    apply(target, second, second)
    assert target.records() == before == {(A, "p1"): ("c2", "3r02"), (A, "p2"): ("c3", "3r02")}
    if target.kind != "parquet":
        sink = target.open()
        try:
            counts = sink.apply(second)
        finally:
            sink.close()
        assert (counts.upserted, counts.skipped) == (0, 2)


def _reset_records(did: str, rows: list[tuple[str, str, str]]) -> pa.Table:
    def row(rkey: str, cid: str, rev: str) -> dict[str, Any]:
        return {"did": did, "collection": POST, "rkey": rkey, "uri": f"at://{did}/{POST}/{rkey}",
                "cid": cid, "rev": rev, "created_at": T0,
                "record": orjson.dumps({"t": cid}).decode()}  # fmt: skip

    return pa.Table.from_pylist([row(*r) for r in rows])


def test_a_reset_drops_rows_at_or_below_its_rev_and_keeps_newer_ones(target: Target) -> None:
    apply(
        target,
        batch(1, hello(1, A), put(1, A, "gone", "c1", "3r01"), put(1, A, "stays", "c2", "3r01")),
        batch(2, put(2, A, "newer", "c3", "3r09"), hello(2, B), put(2, B, "other", "c4", "3r01")),
    )
    content = [("stays", "c2x", "3r04"), ("fresh", "c5", "3r05"), ("newer", "stale", "3r05")]
    sink = target.open()
    try:
        counts = sink.apply(batch(3, RepoReset(3, TIME, A, "3r05", "c-3r05",
                                               _reset_records(A, content))))  # fmt: skip
    finally:
        sink.close()
    if target.kind != "parquet":
        assert (counts.upserted, counts.skipped) == (2, 1)
    assert target.records() == {
        (A, "stays"): ("c2x", "3r04"),
        (A, "fresh"): ("c5", "3r05"),
        (A, "newer"): ("c3", "3r09"),
        (B, "other"): ("c4", "3r01"),
    }


def test_an_erase_drops_every_record_of_the_repo_and_keeps_its_row(target: Target) -> None:
    gone = RepoUpdate(3, TIME, A, "deleted", erase=True)
    apply(
        target,
        batch(1, hello(1, A, "3r01"), put(1, A, "p1", "c1", "3r01"), put(1, A, "p2", "c2", "3r01")),
        batch(2, hello(2, B, "3r01"), put(2, B, "p1", "c3", "3r01")),
        batch(3, gone),
    )
    assert target.records() == {(B, "p1"): ("c3", "3r01")}
    repos = target.repos()
    assert repos[A]["status"] == "deleted" and repos[A]["record_count"] == 0
    assert repos[A]["handle"] == "aaaa.test" and repos[A]["rev"] == "3r01"


def test_repo_rows_take_rev_only_when_newer_and_count_records(target: Target) -> None:
    apply(
        target,
        batch(1, hello(1, A, "3r02"), put(1, A, "p1", "c1", "3r02"), put(1, A, "p2", "c2", "3r02")),
        batch(2, RepoUpdate(2, TIME, A, "ok", rev="3r01", commit_cid="c-old"),
              put(2, A, "p3", "c3", "3r03"), delete(2, A, "p1", "3r03")),
    )  # fmt: skip
    row = target.repos()[A]
    assert (row["rev"], row["commit_cid"]) == ("3r02", "c-3r02")
    assert row["handle"] == "aaaa.test" and row["pds"] == "https://pds.test"
    assert row["record_count"] == 2
    assert row["car_bytes"] is None and row["attempts"] is None
    assert row["fetched_at"] is not None


def test_record_count_follows_every_kind_of_change(target: Target) -> None:
    """After each batch, every repo's record_count is its number of rows: puts that insert
    or only update, deletes that hit or miss, a reset, an erase, a repo seen first."""
    batches = [
        batch(1, hello(1, A), put(1, A, "p1", "c1", "3r01"), put(1, A, "p2", "c2", "3r01"),
              hello(1, B), put(1, B, "q1", "d1", "3r01")),
        batch(2, put(2, A, "p1", "c1b", "3r02"), delete(2, A, "p2", "3r02"),
              delete(2, A, "nothing", "3r02"), put(2, A, "p3", "c3", "3r02"),
              put(2, B, "q1", "old", "3r00"), put(2, B, "q2", "d2", "3r02")),
        batch(3, RepoReset(3, TIME, A, "3r05", "c-3r05",
                           _reset_records(A, [("r1", "x1", "3r05"), ("r2", "x2", "3r05"),
                                              ("r3", "x3", "3r05")])),
              put(3, A, "p9", "c9", "3r06"), RepoUpdate(3, TIME, B, "deleted", erase=True)),
        batch(4, hello(4, B, "3r07"), put(4, B, "q3", "d3", "3r07")),
    ]  # fmt: skip
    expected = [{A: 2, B: 1}, {A: 2, B: 2}, {A: 4, B: 0}, {A: 4, B: 1}]
    for each, counts in zip(batches, expected, strict=True):
        apply(target, each)
        repos = target.repos()
        assert {did: repos[did]["record_count"] for did in (A, B)} == counts
        held = Counter(did for did, _ in target.records())
        assert {did: held[did] for did in (A, B)} == counts


def test_a_repos_updates_in_one_batch_end_as_they_do_one_by_one(target: Target) -> None:
    updates = [
        RepoUpdate(1, TIME, A, "ok", rev="3r02", commit_cid="c2", handle="one.test"),
        RepoUpdate(2, TIME, A, "deactivated", error="gone for now"),
        RepoUpdate(3, TIME, A, "ok", rev="3r01", commit_cid="c1"),  # older: rev stays
        RepoUpdate(4, TIME, A, "ok", rev="3r02", commit_cid="c2-again", pds="https://p.test"),
        RepoUpdate(5, TIME, A, "takendown", handle="two.test"),
    ]
    apply(target, batch(5, *updates))
    facts = ("status", "rev", "commit_cid", "handle", "pds", "error")
    expected = ["takendown", "3r02", "c2", "two.test", "https://p.test", None]
    assert [target.repos()[A][f] for f in facts] == expected
    if target.kind != "postgresql":  # the same updates in five batches end the same
        alone = str(target.tmp / "one-by-one")
        url = f"sqlite:///{alone}.db" if target.kind == "sqlite" else alone
        if target.kind == "kafka":
            url = target.url.replace("/contract-", "/one-by-one-contract-")
        one_by_one = Target(target.kind, url, target.tmp)
        apply(one_by_one, *(batch(u.seq, u) for u in updates))
        assert [one_by_one.repos()[A][f] for f in facts] == expected


@pytest.mark.parametrize("target", ["sqlite", "postgresql", "parquet"], indirect=True)
def test_the_cursor_is_saved_with_the_rows(target: Target) -> None:
    """(Kafka holds no cursor: the stream's state does, saved after the broker's
    acknowledgement; tests/firehose/test_firehose_kafka.py.)"""
    sink = target.open()
    try:
        assert sink.cursor(SOURCE) is None
        sink.apply(batch(7, hello(7, A), put(7, A, "p1", "c1", "3r01")))
        sink.apply(batch(9, put(9, A, "p2", "c2", "3r02")))
        assert sink.cursor(SOURCE) == 9
        assert sink.cursor("elsewhere:443") is None
    finally:
        sink.close()
    reopened = target.open()
    try:
        assert reopened.cursor(SOURCE) == 9
    finally:
        reopened.close()


@pytest.mark.parametrize("target", ["sqlite", "postgresql"], indirect=True)
def test_a_batch_failing_half_way_leaves_neither_rows_nor_cursor(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    apply(target, batch(1, hello(1, A), put(1, A, "p1", "c1", "3r01")))
    before = (target.records(), target.repos())
    monkeypatch.setenv("SKYFILL_FAILPOINT", "stream_applied:every:raise")
    sink = target.open()
    try:
        with pytest.raises(FailpointError):
            sink.apply(batch(2, put(2, A, "p1", "c9", "3r02"), hello(2, B)))
        monkeypatch.delenv("SKYFILL_FAILPOINT")
        assert sink.cursor(SOURCE) == 1
        # the sink is usable again after the failure
        sink.apply(batch(3, put(3, A, "p2", "c2", "3r03")))
    finally:
        sink.close()
    assert (before[0], before[1].keys()) == ({(A, "p1"): ("c1", "3r01")}, {A})
    assert target.records() == {(A, "p1"): ("c1", "3r01"), (A, "p2"): ("c2", "3r03")}
    assert set(target.repos()) == {A}


def test_job_id_is_the_stream_id(target: Target) -> None:
    apply(target, batch(1, hello(1, A), put(1, A, "p1", "c1", "3r01")))
    assert target.job_ids() == {"stream-1"}


@pytest.mark.parametrize("target", ["sqlite", "postgresql", "parquet"], indirect=True)
def test_a_table_written_by_a_backfill_is_kept_current(target: Target) -> None:
    """(Not Kafka: a stream's ledger knows only what the stream published, so its repos
    rows do not carry a backfill's car_bytes; README, "Into Kafka".)"""
    backfilled = [record(A, POST, "old", "b1", "3r02"), record(A, POST, "edit", "b2", "3r02"),
                  record(B, POST, "keep", "b3", "3r02")]  # fmt: skip
    repos = [repo(A, rev="3r02", count=2), repo(B, rev="3r02", count=1)]
    snapshot = None
    if target.kind == "parquet":
        snapshot = target.tmp / "job-output"
        write(ParquetSink(snapshot), backfilled, repos)
    else:
        write(open_sink(target.url, output=target.tmp / "unused"), backfilled, repos)
    apply(
        target,
        batch(1, put(1, A, "edit", "s1", "3r01")),  # older than the backfill: skipped
        batch(2, put(2, A, "edit", "s2", "3r03"), delete(2, A, "old", "3r03"),
              put(2, A, "new", "s3", "3r03"), hello(2, A, "3r03")),
    )  # fmt: skip
    assert target.records(snapshot) == {
        (A, "edit"): ("s2", "3r03"),
        (A, "new"): ("s3", "3r03"),
        (B, "keep"): ("b3", "3r02"),
    }
    rows = target.repos(snapshot)
    assert (rows[A]["rev"], rows[A]["record_count"]) == ("3r03", 2)
    assert (rows[B]["rev"], rows[B]["record_count"]) == ("3r02", 1)
    assert rows[A]["car_bytes"] == 1234  # the backfill's facts stay


@pytest.mark.parametrize("target", ["sqlite", "postgresql"], indirect=True)
def test_a_stream_of_puts_is_applied_quickly(target: Target) -> None:
    """20k puts in batches of 5000; prints the rate (the target for SQLite is well above
    20k changes/s; the assertion is loose so a busy machine does not fail it)."""
    per_batch, batches = 5000, 4
    sink = target.open()
    try:
        sink.apply(batch(0, hello(0, A)))
        started = time.perf_counter()
        for b in range(batches):
            changes = [put(b * per_batch + i + 1, A, f"r{b}-{i}", f"c{i}", f"3r{b:02d}")
                       for i in range(per_batch)]  # fmt: skip
            sink.apply(batch((b + 1) * per_batch, *changes))
        elapsed = time.perf_counter() - started
        assert sink.facts()["records"] == per_batch * batches
    finally:
        sink.close()
    rate = per_batch * batches / elapsed
    print(f"{target.kind} stream sink: {rate:,.0f} puts/s")
    assert rate > 5000


@pytest.mark.parametrize("target", ["postgresql"], indirect=True)
def test_a_change_the_database_refuses_rolls_the_batch_back(target: Target) -> None:
    apply(target, batch(1, hello(1, A), put(1, A, "p1", "c1", "3r01")))
    broken = RecordPut(2, TIME, A, POST, "p3", "c3", "3r02", "{not json", None)
    sink = target.open()
    try:
        with pytest.raises(SinkWriteError, match="nothing was changed"):
            sink.apply(batch(2, put(2, A, "p2", "c2", "3r02"), broken))
        assert sink.cursor(SOURCE) == 1
        sink.apply(batch(3, put(3, A, "p2", "c2", "3r03")))  # the sink reconnects
    finally:
        sink.close()
    assert target.records() == {(A, "p1"): ("c1", "3r01"), (A, "p2"): ("c2", "3r03")}


@pytest.mark.parametrize("target", ["parquet"], indirect=True)
def test_the_event_log_reads_only_done_parts_and_folds_replays_of_other_batching(
    target: Target,
) -> None:
    first = [hello(1, A, "3r01"), put(1, A, "p1", "c1", "3r01"), put(1, A, "p2", "c2", "3r01")]
    second = [put(2, A, "p1", "c3", "3r02"), delete(2, A, "p2", "3r02")]
    third = [put(3, A, "p9", "c9", "3r03")]
    apply(target, batch(1, *first), batch(2, *second))
    # a replay cut differently (one batch over both seqs) appends an overlapping part
    apply(target, batch(2, *first, *second))
    assert target.records() == {(A, "p1"): ("c3", "3r02")}
    apply(target, batch(3, *third))
    newest = max((Path(target.url) / "events").glob("date=*/part-*-000000000003.*.parquet"))
    # as if the process died after the file and before its marker (and so the cursor)
    newest.with_name(newest.name + ".done").unlink()
    (Path(target.url) / "cursor.json").write_bytes(orjson.dumps({SOURCE: 2}))
    assert target.records() == {(A, "p1"): ("c3", "3r02")}
    assert target.open().cursor(SOURCE) == 2
    apply(target, batch(3, *third))  # the restart writes the part again
    assert target.records() == {(A, "p1"): ("c3", "3r02"), (A, "p9"): ("c9", "3r03")}


@pytest.mark.parametrize("target", ["parquet"], indirect=True)
def test_the_event_log_keeps_a_snapshot_at_the_seq_and_idx_of_the_batch_before(
    target: Target,
) -> None:
    """A re-fetched repo's rows carry the seq of the last event before them, in a later
    batch that numbers its rows (idx) from 0: rows of two batches may share (seq, idx)
    without being a replay's copy (and a split stream's shards number their batches each
    on their own). `compact` keeps every row of the snapshot, and still drops the rows a
    replay cut differently wrote again."""
    first = batch(
        5,
        hello(4, A, "3r01"),  # idx 0
        put(4, A, "a1", "c1", "3r01"),  # idx 1
        put(5, A, "a2", "c2", "3r02"),  # idx 2: seq 5 is at idx 2, 3, 4
        put(5, A, "a3", "c3", "3r02"),
        put(5, A, "a4", "c4", "3r02"),
    )
    content = [("b1", "d1", "3r07"), ("b2", "d2", "3r07"), ("b3", "d3", "3r07"),
               ("b4", "d4", "3r07")]  # fmt: skip
    # B re-fetched whole after seq 5: its reset at idx 0, its records at idx 1 to 4
    snapshot = batch(5, RepoReset(5, TIME, B, "3r07", "c-3r07", _reset_records(B, content)))
    # a replay cut differently: seq 5's rows again (at idx 0, 1, 2), then seq 6
    replay = batch(6, *first.changes[2:], put(6, A, "a5", "c5", "3r03"))
    apply(target, first, snapshot, replay)
    assert target.records() == {
        (A, "a1"): ("c1", "3r01"),
        (A, "a2"): ("c2", "3r02"),
        (A, "a3"): ("c3", "3r02"),
        (A, "a4"): ("c4", "3r02"),
        (A, "a5"): ("c5", "3r03"),
        (B, "b1"): ("d1", "3r07"),
        (B, "b2"): ("d2", "3r07"),
        (B, "b3"): ("d3", "3r07"),
        (B, "b4"): ("d4", "3r07"),
    }
    folded = compact(Path(target.url), target.tmp / "folded")
    assert folded["events"] == 5 + 5 + 1  # each row once: the replay's copies dropped


@pytest.mark.parametrize("target", ["parquet"], indirect=True)
def test_the_event_log_keeps_two_batches_of_one_seq(target: Target) -> None:
    """A batch whose events are all of seq 5 (a quiet stream), then a re-fetched repo's
    snapshot before the next event: its rows carry seq 5 too, and its batch's cursor is
    5. Both parts span seqs 5 to 5; the second must not replace the first (their names
    carry the time they were written)."""
    apply(
        target,
        batch(5, hello(5, A, "3r01"), put(5, A, "a1", "c1", "3r01")),
        batch(
            5, RepoReset(5, TIME, B, "3r07", "c-3r07", _reset_records(B, [("b1", "d1", "3r07")]))
        ),
    )
    assert target.records() == {(A, "a1"): ("c1", "3r01"), (B, "b1"): ("d1", "3r07")}
    assert target.repos()[A]["handle"] == "aaaa.test"


@pytest.mark.parametrize("target", ["parquet"], indirect=True)
def test_the_event_log_folds_two_snapshots_at_one_seq_in_the_order_written(
    target: Target,
) -> None:
    """A repo re-fetched twice before the stream's next applied event: both snapshots
    carry seq 5, each in a batch of its own (the second's cursor 6: an event filtered
    out), each numbering its rows from idx 0. The second (rev 3r08) no longer has b2:
    folded in (seq, idx) order the two would interleave and the first's b2 come back
    after the second's reset; in the order written it stays gone."""
    first = [("b1", "d1", "3r07"), ("b2", "d2", "3r07")]
    second = [("b1", "d9", "3r08")]
    apply(
        target,
        batch(5, RepoReset(5, TIME, B, "3r07", "c-3r07", _reset_records(B, first))),
        batch(6, RepoReset(5, TIME, B, "3r08", "c-3r08", _reset_records(B, second))),
    )
    assert target.records() == {(B, "b1"): ("d9", "3r08")}


@pytest.mark.parametrize("url", ["", "  ", "parquet://x"])
def test_open_stream_sink_refuses_what_names_no_sink(url: str) -> None:
    with pytest.raises(SinkUrlError):
        open_stream_sink(url, stream_id="s")

"""The sinks' contract. Every sink (Parquet, a real PostgreSQL, a SQLite file, Kafka read
back and folded by key) holds exactly what it was given and a replay changes nothing; a
load that fails half-way changes nothing (not Kafka: a topic has no transaction here,
what was sent before the failure stays and the next load sends it again); the SQL sinks,
which keep tables across jobs, also refresh each repo by its status within the job's
scope. Rows are built here with Arrow."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest

from skyfill.backfill.schema import RECORDS_SCHEMA, REPOS_SCHEMA
from skyfill.sinks.base import LoadScope, Sink
from skyfill.sinks.exceptions import SinkWriteError
from skyfill.sinks.factory import open_sink
from skyfill.sinks.kafka_url import parse_kafka_url
from tests import sqltables
from tests.kafkabroker import KafkaBroker, fold, read_topic

T0 = datetime(2025, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
POST, LIKE = "app.bsky.feed.post", "app.bsky.feed.like"

MakeSink = Callable[..., Sink]


@pytest.fixture(params=["postgresql", "sqlite"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, MakeSink]:
    """(url, make_sink(scope=...)) for a fresh database of each kind."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/sink.db"
    else:
        url = request.getfixturevalue("pg_url")

    def make(scope: LoadScope | None = None) -> Sink:
        return open_sink(url, output=tmp_path / "unused", scope=scope)

    return url, make


@dataclass(frozen=True)
class Stored:
    """A sink's output read back: records and repos as rows (record as parsed JSON,
    timestamps as aware datetimes), in key order."""

    kind: str
    url: str
    output: Path

    def make(self, scope: LoadScope | None = None) -> Sink:
        return open_sink(self.url, output=self.output, scope=scope)

    def rows(self, table: str) -> list[dict[str, Any]]:
        if self.kind == "kafka":
            return self._kafka_rows(table)
        if self.kind != "parquet":
            return sqltables.rows(self.url, table)
        if table == "repos":
            repos = pq.read_table(self.output / "repos.parquet").to_pylist()
            return sorted(repos, key=lambda r: r["did"])
        dataset = ds.dataset(self.output / "records", format="parquet", partitioning="hive")
        rows = dataset.to_table().to_pylist()
        for row in rows:
            row["record"] = orjson.loads(row["record"])
        return sorted(rows, key=lambda r: (r["did"], r["collection"], r["rkey"]))

    def _kafka_rows(self, table: str) -> list[dict[str, Any]]:
        spec = parse_kafka_url(self.url)
        topic = spec.topic if table == "records" else spec.repos_topic
        rows = [m.json() for m in fold(read_topic(spec.bootstrap[0], topic)).values()]
        for row in rows:
            for column in ("created_at", "fetched_at"):
                if row.get(column):
                    row[column] = datetime.fromisoformat(row[column])
        if table == "repos":
            return sorted(rows, key=lambda r: r["did"])
        return sorted(rows, key=lambda r: (r["did"], r["collection"], r["rkey"]))

    def digest(self) -> str:
        text = json.dumps([self.rows("records"), self.rows("repos")], sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture(params=["parquet", "postgresql", "sqlite", "kafka"])
def every_sink(request: pytest.FixtureRequest, tmp_path: Path) -> Stored:
    """A fresh sink of each kind."""
    if request.param == "parquet":
        return Stored("parquet", "parquet", tmp_path / "output")
    if request.param == "kafka":
        broker: KafkaBroker = request.getfixturevalue("kafka")
        return Stored("kafka", broker.url(broker.topic("contract")), tmp_path / "unused")
    if request.param == "sqlite":
        return Stored("sqlite", f"sqlite:///{tmp_path}/sink.db", tmp_path / "unused")
    return Stored("postgresql", request.getfixturevalue("pg_url"), tmp_path / "unused")


def record(did: str, collection: str, rkey: str, cid: str, rev: str = "3rev1", **extra) -> dict:
    value = {"$type": collection, "createdAt": T0.isoformat(), "text": f"{rkey} {cid}", **extra}
    return {
        "did": did,
        "collection": collection,
        "rkey": rkey,
        "uri": f"at://{did}/{collection}/{rkey}",
        "cid": cid,
        "rev": rev,
        "created_at": T0 if collection == POST else None,
        "record": orjson.dumps(value).decode(),
        "job_id": "job-a",
    }


def repo(did: str, status: str = "ok", rev: str | None = "3rev1", count: int | None = 0) -> dict:
    ok = status == "ok"
    return {
        "did": did,
        "handle": f"{did[-4:]}.test",
        "pds": "https://pds.test",
        "status": status,
        "rev": rev if ok else None,
        "commit_cid": "bafycommit" + (rev or "") if ok else None,
        "record_count": count if ok else None,
        "car_bytes": 1234 if ok else None,
        "attempts": 1,
        "error": None if ok else f"{status} reason",
        "fetched_at": T0,
    }


def batches(
    rows: list[dict], schema: pa.Schema, batch_rows: int, fail_after: int | None = None
) -> pa.RecordBatchReader:
    """`rows` as a stream of batches; with `fail_after`, the stream breaks after that many
    batches (as a merge that fails half-way would)."""
    chunks = [rows[i : i + batch_rows] for i in range(0, len(rows), batch_rows)]

    def stream() -> Iterator[pa.RecordBatch]:
        for n, chunk in enumerate(chunks):
            if fail_after is not None and n >= fail_after:
                raise RuntimeError("the input broke off")
            yield pa.RecordBatch.from_pylist(chunk, schema=schema)

    return pa.RecordBatchReader.from_batches(schema, stream())


def write(
    sink: Sink,
    records: list[dict],
    repos: list[dict],
    batch_rows: int = 3,
    fail_after: int | None = None,
) -> dict[str, Any]:
    """Write through the sink as the aggregator does: sorted records, in several batches."""
    records = sorted(records, key=lambda r: (r["did"], r["collection"], r["rkey"]))
    return sink.write(
        batches(records, RECORDS_SCHEMA, batch_rows, fail_after),
        batches(repos, REPOS_SCHEMA, batch_rows),
    )


def load(sink: Sink, records: list[dict], repos: list[dict], batch_rows: int = 3) -> dict[str, Any]:
    """A SQL sink's load: its counts of rows inserted, updated, unchanged and deleted."""
    return write(sink, records, repos, batch_rows)["sink"]["records"]


def keys(url: str) -> dict[str, set[tuple[str, str, str]]]:
    out: dict[str, set[tuple[str, str, str]]] = {}
    for row in sqltables.rows(url, "records"):
        out.setdefault(row["did"], set()).add((row["collection"], row["rkey"], row["cid"]))
    return out


def repos_table(url: str) -> dict[str, dict]:
    return {row["did"]: row for row in sqltables.rows(url, "repos")}


FIRST = [
    *(record("did:a", POST, f"p{i}", f"cida{i}") for i in range(4)),
    record("did:a", LIKE, "l1", "cidal1"),
    *(record("did:b", POST, f"p{i}", f"cidb{i}") for i in range(2)),
    record("did:gone", POST, "p1", "cidg1"),
    record("did:gone", LIKE, "l1", "cidgl1"),
    record("did:fail", POST, "p1", "cidf1"),
    record("did:bad", POST, "p1", "cidx1"),
    record("did:other", POST, "p1", "cido1"),
]
FIRST_REPOS = [
    repo("did:a", count=5),
    repo("did:b", count=2),
    repo("did:gone", count=2),
    repo("did:fail", count=1),
    repo("did:bad", count=1),
    repo("did:other", count=1),
]


# -- every sink ------------------------------------------------------------------------------


RECORD_FIELDS = ("did", "collection", "rkey", "uri", "cid", "rev", "created_at", "job_id")
REPO_FIELDS = ("did", "handle", "pds", "status", "rev", "commit_cid", "record_count", "error")


def test_every_sink_holds_exactly_what_it_was_given_and_a_replay_changes_nothing(
    every_sink: Stored,
) -> None:
    write(every_sink.make(), FIRST, FIRST_REPOS)
    stored = every_sink.rows("records")
    expected = sorted(FIRST, key=lambda r: (r["did"], r["collection"], r["rkey"]))
    assert [{k: r[k] for k in RECORD_FIELDS} for r in stored] == [
        {k: r[k] for k in RECORD_FIELDS} for r in expected
    ]
    assert [r["record"] for r in stored] == [orjson.loads(r["record"]) for r in expected]
    assert [{k: r[k] for k in REPO_FIELDS} for r in every_sink.rows("repos")] == [
        {k: r[k] for k in REPO_FIELDS} for r in sorted(FIRST_REPOS, key=lambda r: r["did"])
    ]
    before = every_sink.digest()
    write(every_sink.make(), FIRST, FIRST_REPOS, batch_rows=5)
    assert every_sink.digest() == before


@pytest.mark.parametrize("every_sink", ["parquet", "postgresql", "sqlite"], indirect=True)
def test_a_load_whose_input_breaks_off_changes_nothing(every_sink: Stored) -> None:
    write(every_sink.make(), FIRST, FIRST_REPOS)
    before = every_sink.digest()
    fresh = [*FIRST[:3], record("did:a", POST, "p8", "cida8"), record("did:z", POST, "p1", "z1")]
    with pytest.raises(Exception, match="the input broke off"):
        write(every_sink.make(), fresh, [repo("did:a"), repo("did:z")], 2, fail_after=1)
    assert every_sink.digest() == before
    write(every_sink.make(), FIRST, FIRST_REPOS)  # and the sink is usable again
    assert every_sink.digest() == before


# -- the SQL sinks ----------------------------------------------------------------------------


def test_load_writes_the_rows_and_a_replay_changes_nothing(
    backend: tuple[str, MakeSink],
) -> None:
    url, make = backend
    counts = load(make(), FIRST, FIRST_REPOS)
    assert counts == {"rows": 12, "inserted": 12, "updated": 0, "unchanged": 0, "deleted": 0}
    stored = sqltables.rows(url, "records")
    assert len(stored) == 12
    first = next(r for r in stored if (r["did"], r["rkey"]) == ("did:a", "p0"))
    assert first["uri"] == "at://did:a/app.bsky.feed.post/p0" and first["created_at"] == T0
    assert first["record"]["text"] == "p0 cida0" and first["job_id"] == "job-a"
    assert repos_table(url)["did:a"]["record_count"] == 5
    before = (sqltables.digest(url, "records"), sqltables.digest(url, "repos"))

    again = load(make(), FIRST, FIRST_REPOS, batch_rows=5)
    assert again == {"rows": 12, "inserted": 0, "updated": 0, "unchanged": 12, "deleted": 0}
    assert (sqltables.digest(url, "records"), sqltables.digest(url, "repos")) == before


def test_refresh_follows_each_status(backend: tuple[str, MakeSink]) -> None:
    url, make = backend
    load(make(), FIRST, FIRST_REPOS)
    before = repos_table(url)
    second = [
        record("did:a", POST, "p0", "cida0", rev="3rev2"),  # same record, new rev: updated
        record("did:a", POST, "p1", "cida1-edited", rev="3rev2"),  # changed
        record("did:a", POST, "p9", "cida9", rev="3rev2"),  # new
        record("did:a", LIKE, "l1", "cidal1", rev="3rev2"),
    ]  # p2, p3 of did:a disappeared; did:b is ok with an empty repo now
    counts = load(
        make(),
        second,
        [
            repo("did:a", rev="3rev2", count=4),
            repo("did:b", rev="3rev2", count=0),
            repo("did:gone", "deactivated"),
            repo("did:fail", "failed"),
            repo("did:bad", "invalid_repo"),
        ],
    )
    assert counts == {"rows": 4, "inserted": 1, "updated": 3, "unchanged": 0, "deleted": 6}
    assert keys(url) == {
        "did:a": {
            (POST, "p0", "cida0"),
            (POST, "p1", "cida1-edited"),
            (POST, "p9", "cida9"),
            (LIKE, "l1", "cidal1"),
        },
        "did:fail": {(POST, "p1", "cidf1")},  # a transient failure loses nothing
        "did:bad": {(POST, "p1", "cidx1")},
        "did:other": {(POST, "p1", "cido1")},  # not in this job: untouched
    }
    revs = {(r["did"], r["rkey"]): r["rev"] for r in sqltables.rows(url, "records")}
    assert revs[("did:a", "p0")] == "3rev2" and revs[("did:fail", "p1")] == "3rev1"
    after = repos_table(url)
    assert after["did:a"]["rev"] == "3rev2" and after["did:a"]["record_count"] == 4
    assert after["did:b"]["record_count"] == 0
    gone = after["did:gone"]
    assert gone["status"] == "deactivated" and gone["rev"] is None and gone["record_count"] is None
    for did, status in (("did:fail", "failed"), ("did:bad", "invalid_repo")):
        row = after[did]
        assert row["status"] == status and row["error"] == f"{status} reason"
        # ... and the columns that describe the rows still in `records` are kept:
        for column in ("rev", "commit_cid", "record_count", "car_bytes", "handle", "pds"):
            assert row[column] == before[did][column], (did, column)
    assert after["did:other"] == before["did:other"]


def test_a_collection_scope_touches_only_its_collections(backend: tuple[str, MakeSink]) -> None:
    url, make = backend
    load(make(), FIRST, FIRST_REPOS)
    counts = load(
        make(LoadScope(collections=("app.bsky.feed.p*",))),
        [record("did:a", POST, "p0", "cida0")],
        [repo("did:a", count=1), repo("did:gone", "takendown")],
    )
    assert counts["deleted"] == 4  # did:a p1..p3, did:gone's post
    assert keys(url)["did:a"] == {(POST, "p0", "cida0"), (LIKE, "l1", "cidal1")}
    assert keys(url)["did:gone"] == {(LIKE, "l1", "cidgl1")}


def test_a_time_window_adds_and_updates_but_deletes_only_gone_accounts(
    backend: tuple[str, MakeSink],
) -> None:
    url, make = backend
    load(make(), FIRST, FIRST_REPOS)
    counts = load(
        make(LoadScope(complete=False)),
        [record("did:a", POST, "p3", "cida3-edited"), record("did:a", POST, "p8", "cida8")],
        [repo("did:a", count=6), repo("did:gone", "suspended")],
    )
    assert (counts["inserted"], counts["updated"], counts["deleted"]) == (1, 1, 2)
    assert len(keys(url)["did:a"]) == 6 and "did:gone" not in keys(url)


def test_a_failing_load_changes_nothing(backend: tuple[str, MakeSink]) -> None:
    url, make = backend
    load(make(), FIRST, FIRST_REPOS)
    before = (sqltables.digest(url, "records"), sqltables.digest(url, "repos"))
    # Records are upserted and deleted first; the repos row without a status (NOT NULL)
    # fails the load only after that, and everything must be rolled back.
    fresh = [record("did:a", POST, "p8", "cida8"), record("did:b", POST, "p0", "changed")]
    broken = {**repo("did:new"), "status": None}
    with pytest.raises(SinkWriteError, match="nothing was changed"):
        load(make(), fresh, [repo("did:a"), repo("did:b"), broken])
    assert (sqltables.digest(url, "records"), sqltables.digest(url, "repos")) == before


def test_text_the_database_cannot_hold_is_replaced_not_refused(
    backend: tuple[str, MakeSink],
) -> None:
    url, make = backend
    odd = record("did:n", POST, "p1", "cidn1", text="a\x00b", nested=["c\x00d"])
    assert "\\u0000" in odd["record"]
    counts = load(make(), [odd], [repo("did:n", count=1)])
    assert counts["inserted"] == 1
    (stored,) = sqltables.rows(url, "records")
    if url.startswith("sqlite:"):  # SQLite keeps the text as it is
        assert stored["record"]["text"] == "a\x00b"
    else:  # jsonb cannot hold U+0000
        assert stored["record"]["text"] == "a\ufffdb" and stored["record"]["nested"] == ["c\ufffdd"]
    assert load(make(), [odd], [repo("did:n", count=1)])["unchanged"] == 1

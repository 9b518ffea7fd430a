"""The label sinks (SQLite, PostgreSQL, the Parquet log folded by `compact_labels`) keep
the same labels: one per (src, uri, cid, val), the latest by seq; a negation stays as the
key's row and is never current; an expired label is kept but not current; a batch
applied again after later ones (a replay) changes nothing; the cursor is the batch's."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pyarrow.parquet as pq
import pytest

from skyfill.sinks.exceptions import SinkUnavailable
from skyfill.sinks.factory import open_label_sink
from skyfill.sinks.labels import LabelBatch, LabelRow, LabelSink
from skyfill.sinks.labels_compact import compact_labels

URL = "http://127.0.0.1:1/labeler"
SRC = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
ACCOUNT = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"
CID = "bafyreig62rxs34h5rvznfrracwkjlfgad5b25qxglp2hcziqdfas2nw2ee"


def row(seq: int, uri: str, val: str, cid: str | None = None, **fields: object) -> LabelRow:
    values = {"neg": False, "cts": f"2026-01-01T00:00:{seq:02d}.000Z", "exp": None, **fields}
    return LabelRow(seq=seq, src=SRC, uri=uri, cid=cid, val=val, sig=bytes(64), ver=1,
                    **values)  # type: ignore[arg-type]  # fmt: skip


FIRST = LabelBatch(URL, 3, [
    row(1, ACCOUNT, "spam"),
    row(2, ACCOUNT, "spam", cid=CID),  # another key: the account at a version
    row(3, ACCOUNT, "rude", exp="2020-01-01T00:00:00Z"),
])  # fmt: skip
THEN = LabelBatch(URL, 7, [
    row(5, ACCOUNT, "spam", neg=True),
    row(6, ACCOUNT, "gore", exp="2999-01-01T00:00:00.000+00:00"),
])  # fmt: skip
Current = Callable[[], set[tuple]]


@pytest.fixture(params=["sqlite", "postgresql", "parquet"])
def sink(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[LabelSink, Current]]:
    if request.param == "sqlite":
        db = tmp_path / "l.db"
        opened = open_label_sink(f"sqlite:///{db}")

        def current() -> set[tuple]:
            with sqlite3.connect(db) as conn:
                return set(conn.execute("SELECT seq, uri, cid, val FROM labels_current"))

    elif request.param == "postgresql":
        url = request.getfixturevalue("pg_url")
        opened = open_label_sink(url)

        def current() -> set[tuple]:
            with psycopg.connect(url) as conn:
                return set(conn.execute("SELECT seq, uri, cid, val FROM labels_current"))

    else:
        opened = open_label_sink(str(tmp_path / "log"))

        def current() -> set[tuple]:
            compact_labels(tmp_path / "log", tmp_path / "out")
            table = pq.read_table(tmp_path / "out" / "labels_current.parquet")
            return {(r["seq"], r["uri"], r["cid"], r["val"]) for r in table.to_pylist()}

    opened.check()
    try:
        yield opened, current
    finally:
        opened.close()


def test_latest_by_seq_negations_expiry_and_replays(sink: tuple[LabelSink, Current]) -> None:
    labels, current = sink
    assert labels.cursor(URL) is None
    assert labels.apply(FIRST) == 3
    assert current() == {(1, ACCOUNT, None, "spam"), (2, ACCOUNT, CID, "spam")}
    assert labels.apply(THEN) == 2
    assert labels.cursor(URL) == 7
    expected = {(2, ACCOUNT, CID, "spam"), (6, ACCOUNT, None, "gore")}
    assert current() == expected
    labels.apply(FIRST)  # replayed after the negation: the older label does not come back
    labels.apply(THEN)
    assert current() == expected
    assert labels.cursor(URL) == 7
    assert labels.apply(LabelBatch(URL, 9, [])) == 0  # a cursor with no labels (all refused)
    assert labels.cursor(URL) == 9 and current() == expected


def test_a_labels_table_of_another_shape_is_refused_in_one_line(
    tmp_path: Path, pg_url: str
) -> None:
    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE labels (name TEXT)")
    mine = open_label_sink(f"sqlite:///{db}")
    with pytest.raises(SinkUnavailable, match=r"the labels tables: .*no such column"):
        mine.cursor(URL)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE labels (name text)")
    theirs = open_label_sink(pg_url)
    with pytest.raises(SinkUnavailable, match="table labels exists but lacks column"):
        theirs.check()

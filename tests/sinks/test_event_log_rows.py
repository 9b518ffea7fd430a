"""The Parquet event log's rows of a batch: read column by column off the changes (the
fast path) they are the rows the one-by-one path makes, for every kind of change."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from skyfill.sinks.changes import ChangeBatch, RecordDelete, RecordPut, RepoReset, RepoUpdate
from skyfill.sinks.event_log import _rows, _rows_by_column, _rows_one_by_one

WHEN = datetime(2025, 10, 1, tzinfo=UTC)


def _changes() -> list:
    did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    return [
        RecordPut(1, "t1", did, "app.bsky.feed.post", "3k1", "bafy1", "3ka", '{"a":1}', WHEN),
        RecordPut(2, "t2", did, "app.bsky.feed.post", "3k1", "bafy2", "3kb", "{}", None, "update"),
        RecordDelete(3, "t3", did, "app.bsky.feed.like", "3k2", "3kc"),
        RepoUpdate(3, "t3", did, "ok", "3kc", "bafyc", "alice.test", "http://pds", None, False),
        RepoUpdate(4, "t4", did, "deleted", error="gone", erase=True),
    ]


def test_rows_by_column_equal_rows_one_by_one() -> None:
    changes = _changes()
    fast, slow = _rows_by_column(changes), _rows_one_by_one(changes)
    assert fast.table().equals(slow.table())
    assert fast.ops == slow.ops == {"create": 1, "update": 1, "delete": 1, "repo": 2}
    assert fast.count == slow.count == 5
    rows = fast.table().to_pylist()
    assert rows[2]["cid"] is None and rows[2]["op"] == "delete"
    assert rows[4]["erase"] is True and rows[0]["erase"] is None


def test_a_batch_with_a_reset_takes_the_rows_one_by_one() -> None:
    did = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
    records = pa.table(
        {
            "did": [did],
            "collection": ["app.bsky.feed.post"],
            "rkey": ["3k9"],
            "uri": [f"at://{did}/app.bsky.feed.post/3k9"],
            "cid": ["bafy9"],
            "rev": ["3kz"],
            "created_at": pa.array([WHEN], pa.timestamp("us", tz="UTC")),
            "record": ["{}"],
        }
    )
    changes = [*_changes(), RepoReset(5, "t5", did, "3kz", "bafyz", records)]
    rows = _rows(ChangeBatch("host", 5, changes))
    table = rows.table()
    assert table.num_rows == 7  # the reset's own row, then its one record
    assert table.column("op").to_pylist()[-2:] == ["reset", "create"]
    assert table.column("idx").to_pylist() == list(range(7))

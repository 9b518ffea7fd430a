"""SQLite specifics: column types (JSON and ISO text), and the checks made before a job."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from skyfill.sinks.exceptions import SinkUnavailable
from skyfill.sinks.factory import open_sink
from tests.sinks.test_sink_contract import FIRST, FIRST_REPOS, load


def test_records_are_json_text_and_times_iso_text(tmp_path: Path) -> None:
    path = tmp_path / "out.db"
    load(open_sink(f"sqlite:///{path}", output=tmp_path), FIRST, FIRST_REPOS)
    with closing(sqlite3.connect(path)) as conn:
        row = conn.execute(
            "SELECT created_at, record ->> '$.text', typeof(record) FROM records"
            " WHERE did = 'did:a' AND rkey = 'p1'"
        ).fetchone()
        fetched = conn.execute("SELECT fetched_at FROM repos WHERE did = 'did:a'").fetchone()
        pk = conn.execute("SELECT name FROM pragma_table_info('records') WHERE pk > 0").fetchall()
    assert row == ("2025-03-01T12:00:00.123456Z", "p1 cida1", "text")
    assert fetched == ("2025-03-01T12:00:00.123456Z",)
    assert [name for (name,) in pk] == ["did", "collection", "rkey"]


def test_a_missing_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SinkUnavailable, match="no directory"):
        open_sink(f"sqlite:///{tmp_path}/absent/out.db", output=tmp_path).check()


def test_a_file_that_is_not_sqlite_is_refused(tmp_path: Path) -> None:
    (tmp_path / "out.db").write_text("not a database, just text that is long enough" * 10)
    with pytest.raises(SinkUnavailable, match="not a database"):
        open_sink(f"sqlite:///{tmp_path}/out.db", output=tmp_path).check()

"""PostgreSQL specifics: column types, keys and indexes; connection checks; passwords."""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from skyfill.sinks.exceptions import SinkUnavailable
from skyfill.sinks.factory import open_sink
from tests.pgserver import PASSWORD, SECRET_USER, PostgresServer, free_port
from tests.sinks.test_sink_contract import FIRST, FIRST_REPOS, load, write


def _sink(url: str, tmp_path: Path):
    return open_sink(url, output=tmp_path / "unused")


def test_tables_have_the_documented_types_keys_and_indexes(pg_url: str, tmp_path: Path) -> None:
    load(_sink(pg_url, tmp_path), FIRST, FIRST_REPOS)
    with psycopg.connect(pg_url) as conn:
        types = dict(
            conn.execute(
                "SELECT table_name || '.' || column_name, data_type FROM information_schema.columns"
                " WHERE table_schema = 'public'"
            ).fetchall()
        )
        keys = dict(
            conn.execute(
                "SELECT conrelid::regclass::text, pg_get_constraintdef(oid) FROM pg_constraint"
                " WHERE contype = 'p' AND connamespace = 'public'::regnamespace"
            ).fetchall()
        )
        indexes = {row[0] for row in conn.execute("SELECT indexname FROM pg_indexes")}
        posts = conn.execute(
            "SELECT count(*) FROM records WHERE record->>'$type' = 'app.bsky.feed.post'"
            " AND created_at > '2025-01-01'::timestamptz"
        ).fetchone()
    assert types["records.created_at"] == "timestamp with time zone"
    assert types["records.record"] == "jsonb"
    assert types["repos.record_count"] == "bigint" and types["repos.fetched_at"].startswith("time")
    assert keys == {
        "records": "PRIMARY KEY (did, collection, rkey)",
        "repos": "PRIMARY KEY (did)",
    }
    assert {"records_collection_created_at", "repos_status"} <= indexes
    assert posts == (10,)


def test_an_unreachable_server_is_one_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://nobody:hunter2@127.0.0.1:{free_port()}/db"
    with pytest.raises(SinkUnavailable) as caught:
        _sink(url, tmp_path).check()
    message = str(caught.value)
    assert message.startswith(f"cannot connect to postgresql://nobody@127.0.0.1:{url[-8:-3]}")
    assert "hunter2" not in message and "\n" not in message


def test_a_foreign_records_table_is_refused_before_any_fetch(pg_url: str, tmp_path: Path) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE records (id integer PRIMARY KEY)")
    with pytest.raises(SinkUnavailable, match="not a skyfill table"):
        _sink(pg_url, tmp_path).check()


def test_a_password_is_used_but_never_shown(
    postgres: PostgresServer, pg_url: str, tmp_path: Path
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    base = f"127.0.0.1:{postgres.port}/{database}"
    sink = _sink(f"postgresql://{SECRET_USER}:{PASSWORD}@{base}", tmp_path)
    assert PASSWORD not in sink.target
    sink.check()
    assert load(sink, FIRST, FIRST_REPOS)["inserted"] == len(FIRST)

    with pytest.raises(SinkUnavailable) as wrong:
        _sink(f"postgresql://{SECRET_USER}:not-{PASSWORD}@{base}", tmp_path).check()
    assert "password authentication failed" in str(wrong.value)
    assert PASSWORD not in str(wrong.value)
    with pytest.raises(SinkUnavailable, match="PGPASSWORD"):  # none given: say how
        _sink(f"postgresql://{SECRET_USER}@{base}", tmp_path).check()


def test_a_first_load_goes_straight_in_and_a_second_is_merged(pg_url: str, tmp_path: Path) -> None:
    first = write(_sink(pg_url, tmp_path), FIRST, FIRST_REPOS, 3)["sink"]
    assert "upsert_records" not in first["seconds"]  # into the empty table, without staging
    assert first["records"]["inserted"] == first["records"]["rows"] == len(FIRST)
    assert first["records"]["updated"] == first["records"]["deleted"] == 0
    again = write(_sink(pg_url, tmp_path), FIRST, FIRST_REPOS, 3)["sink"]
    assert "upsert_records" in again["seconds"]
    assert again["records"]["inserted"] == again["records"]["updated"] == 0
    with psycopg.connect(pg_url) as conn:
        count = conn.execute("SELECT count(*) FROM records").fetchone()
    assert count == (len(FIRST),)

"""`--sink URL` parsing: the kinds, stored forms without passwords, and refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyfill.sinks.exceptions import SinkUrlError
from skyfill.sinks.factory import parse_sink_url
from skyfill.sinks.parquet import ParquetSink

CASES = [
    (None, "parquet", "parquet", None),
    ("parquet", "parquet", "parquet", None),
    ("postgresql://u@h:5432/db", "postgresql", "postgresql://u@h:5432/db", None),
    ("postgres://u:p%40ss@h/db", "postgresql", "postgresql://u@h/db", "p@ss"),
    (
        "postgresql://u@h/db?sslmode=require&password=pw",
        "postgresql",
        "postgresql://u@h/db?sslmode=require",
        "pw",
    ),
    ("sqlite:////tmp/x.db", "sqlite", "sqlite:////tmp/x.db", None),
]


@pytest.mark.parametrize(("text", "kind", "stored", "password"), CASES)
def test_sink_urls(text: str | None, kind: str, stored: str, password: str | None) -> None:
    parsed = parse_sink_url(text)
    assert (parsed.kind, parsed.url, parsed.password) == (kind, stored, password)


def test_a_relative_sqlite_path_is_made_absolute(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    parsed = parse_sink_url("sqlite:///data/out.db")
    assert parsed.path == tmp_path / "data" / "out.db"
    assert parsed.url == f"sqlite:///{tmp_path}/data/out.db"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("mysql://u:pw@h/db", "is not a sink"),
        ("s3://bucket/prefix", "is not a sink"),
        ("postgresql://u:pw@h:5432/", "names no database"),
        ("postgresql://u:pw@h/db?nonsense=1", "invalid URI query parameter"),
        ("sqlite://out.db", "want sqlite:///"),
        ("sqlite:///", "names no database file"),
    ],
)
def test_bad_sink_urls_are_refused_without_their_password(text: str, needle: str) -> None:
    with pytest.raises(SinkUrlError, match=needle) as caught:
        parse_sink_url(text)
    assert ":pw@" not in str(caught.value) and "\n" not in str(caught.value)


def test_parquet_is_a_sink_with_nothing_to_check(tmp_path: Path) -> None:
    sink = ParquetSink(tmp_path / "output")
    sink.check()
    assert (sink.kind, sink.target) == ("parquet", "output")

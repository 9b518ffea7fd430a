"""`--sink URL` -> a `Sink`: the one place that knows the URL forms.

    (absent), parquet                    Parquet under <job>/output/ (the default)
    sqlite:///relative/path.db           SQLite file, relative to the current directory
    sqlite:////absolute/path.db          (the SQLAlchemy convention: a fourth slash for '/')
    postgresql://user@host:port/db       PostgreSQL (also postgres://; libpq query options)
    kafka://host:port[,…]/TOPIC?…        Kafka topics TOPIC and TOPIC.repos (`kafka_url.py`)

A password in a PostgreSQL URL (`user:secret@`, or `?password=`) is used but never stored
or shown: `split_password` takes it out before the URL goes into the job's config, its
manifests or any message (a URL refused before that is shown through `redact_url`). A
resumed job authenticates as libpq does without one (PGPASSWORD, ~/.pgpass / PGPASSFILE,
a trust or peer rule).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlencode, urlsplit, urlunsplit

from skyfill.sinks.base import LoadScope, Sink
from skyfill.sinks.changes import StreamSink
from skyfill.sinks.exceptions import SinkUrlError
from skyfill.sinks.kafka_url import SCHEME as KAFKA_SCHEME
from skyfill.sinks.kafka_url import parse_kafka_url
from skyfill.sinks.labels import LabelSink
from skyfill.urls import redact_url

PARQUET = "parquet"
POSTGRES_SCHEMES = ("postgresql", "postgres")
SQLITE_SCHEME = "sqlite"


@dataclass(frozen=True, slots=True)
class SinkUrl:
    kind: str
    """parquet, sqlite, postgresql or kafka."""
    url: str
    """The URL without a password (what is stored and shown)."""
    password: str | None = None
    path: Path | None = None
    """The database file of a sqlite URL."""


def parse_sink_url(text: str | None) -> SinkUrl:
    """Validate a --sink value (syntax only, nothing is contacted). Raises SinkUrlError."""
    value = (text or "").strip()
    if value in ("", PARQUET):
        return SinkUrl(PARQUET, PARQUET)
    scheme = value.partition(":")[0].lower()
    if scheme in POSTGRES_SCHEMES:
        return _postgres_url(value)
    if scheme == SQLITE_SCHEME:
        return _sqlite_url(value)
    if scheme == KAFKA_SCHEME:
        return SinkUrl(KAFKA_SCHEME, parse_kafka_url(value).url)
    raise SinkUrlError(
        f"sink: {redact_url(value)!r} is not a sink (want parquet, sqlite:///path.db, "
        "postgresql://user@host:port/db or kafka://host:port/topic)"
    )


def split_password(text: str | None) -> tuple[str, str | None]:
    """The URL to store (absolute sqlite path, no password) and the password, if any."""
    parsed = parse_sink_url(text)
    return parsed.url, parsed.password


def open_sink(
    url: str | None,
    *,
    output: Path,
    scope: LoadScope | None = None,
    password: str | None = None,
    low_memory: bool = False,
) -> Sink:
    """The sink a URL names. `output` is the job's output directory (used by Parquet)."""
    parsed = parse_sink_url(url)
    scope = scope or LoadScope()
    if parsed.kind == PARQUET:
        from skyfill.sinks.parquet import ParquetSink

        return ParquetSink(output, low_memory=low_memory)
    if parsed.kind == SQLITE_SCHEME:
        from skyfill.sinks.sqlite import SqliteSink

        assert parsed.path is not None
        return SqliteSink(parsed.path, scope)
    if parsed.kind == KAFKA_SCHEME:
        from skyfill.sinks.kafka import KafkaSink

        return KafkaSink(parse_kafka_url(parsed.url))
    from skyfill.sinks.postgres import PostgresSink

    return PostgresSink(parsed.url, scope, password=password or parsed.password)


def _postgres_url(value: str) -> SinkUrl:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        parts = urlsplit(value)
        options = conninfo_to_dict(value)
    except (ValueError, ProgrammingError) as exc:
        raise SinkUrlError(f"sink: {redact_url(value)!r}: {exc}") from None
    if not options.get("dbname") or options["dbname"] == "/":
        raise SinkUrlError(
            f"sink: {redact_url(value)!r} names no database (want postgresql://user@host:port/db)"
        )
    userinfo, at, hosts = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0]
    password = options.get("password")
    query = [(k, v) for k, v in parse_qsl(parts.query, True) if k != "password"]
    netloc = f"{user}@{hosts}" if at and user else hosts
    scheme = "postgresql"
    url = urlunsplit((scheme, netloc, parts.path, urlencode(query, quote_via=quote), ""))
    return SinkUrl("postgresql", url, password=str(password) if password else None)


def _sqlite_url(value: str) -> SinkUrl:
    rest = value[len(SQLITE_SCHEME) + 1 :]
    if not rest.startswith("///") or "?" in rest or "#" in rest:
        raise SinkUrlError(
            f"sink: {value!r}: want sqlite:///relative/path.db or sqlite:////absolute/path.db"
        )
    raw = unquote(rest[3:])
    if not raw or raw.endswith("/"):
        raise SinkUrlError(f"sink: {value!r} names no database file")
    path = Path(raw).expanduser().resolve()
    return SinkUrl(SQLITE_SCHEME, f"sqlite:///{quote(str(path))}", path=path)


def open_stream_sink(
    url: str,
    *,
    stream_id: str,
    password: str | None = None,
    state_dir: Path | None = None,
    shard: int | None = None,
) -> StreamSink:
    """The stream sink a URL names: sqlite:///PATH, postgresql://…, kafka://…, or a
    directory (a Parquet event log). `state_dir` is the stream's own directory, where a
    Kafka sink keeps what it has published (a stream without one cannot write to Kafka);
    `shard`, a split stream's shard, whose event-log files are its own."""
    if not url.strip():
        raise SinkUrlError(
            "a stream's sink: want sqlite:///path.db, postgresql://…, kafka://… or a directory"
        )
    if "://" not in url:
        from skyfill.sinks.event_log import EventLogSink

        return EventLogSink(Path(url), stream_id, shard)
    parsed = parse_sink_url(url)
    if parsed.kind == SQLITE_SCHEME:
        from skyfill.sinks.sqlite_stream import SqliteStreamSink

        assert parsed.path is not None
        return SqliteStreamSink(parsed.path, stream_id)
    if parsed.kind == PARQUET:
        raise SinkUrlError("a stream's Parquet sink is a directory: give its path")
    if parsed.kind == KAFKA_SCHEME:
        if state_dir is None:
            raise SinkUrlError(
                "a Kafka sink takes a stream of its own (skyfill firehose, run --follow), "
                "not this command"
            )
        from skyfill.sinks.kafka_stream import KafkaStreamSink

        return KafkaStreamSink(parse_kafka_url(parsed.url), stream_id, state_dir)
    from skyfill.sinks.postgres_stream import PostgresStreamSink

    return PostgresStreamSink(parsed.url, stream_id, password=password or parsed.password)


def open_label_sink(url: str, *, password: str | None = None) -> LabelSink:
    """The label sink a URL names: sqlite:///PATH, postgresql://…, or a directory (a
    Parquet label log)."""
    if not url.strip():
        raise SinkUrlError("a label sink: want sqlite:///path.db, postgresql://… or a directory")
    if "://" not in url:
        from skyfill.sinks.labels_log import LabelLogSink

        return LabelLogSink(Path(url))
    parsed = parse_sink_url(url)
    if parsed.kind == SQLITE_SCHEME:
        from skyfill.sinks.labels_sqlite import SqliteLabelSink

        assert parsed.path is not None
        return SqliteLabelSink(parsed.path)
    if parsed.kind == PARQUET:
        raise SinkUrlError("a label sink's Parquet log is a directory: give its path")
    if parsed.kind == KAFKA_SCHEME:
        raise SinkUrlError(
            "labels do not go to Kafka: give sqlite://, postgresql:// or a directory"
        )
    from skyfill.sinks.labels_postgres import PostgresLabelSink

    return PostgresLabelSink(parsed.url, password=password or parsed.password)

"""`kafka://HOST:PORT[,HOST:PORT…]/TOPIC?option=value…`: where a Kafka sink publishes.

Options (all optional):

    repos_topic=NAME      the repos status topic (default: TOPIC.repos)
    compression=CODEC     zstd, gzip, lz4, snappy or none (default: zstd when the client
                          has it, which `aiokafka[zstd]` brings, else gzip)
    idempotence=BOOL      an idempotent producer (default true: no duplicate from the
                          producer's own retries; brokers that refuse it need false)
    linger_ms=MS          how long a batch waits for more messages (default 20)
    partitions=N          partitions of a topic the sink creates (default 6)
    replication=N         its replication factor (default: min(3, brokers))

Only PLAINTEXT listeners: a URL with credentials is refused (nothing to keep secret).
Parsing contacts nothing; `SinkUrlError` says what is wrong in one line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit

from skyfill.sinks.exceptions import SinkUrlError

SCHEME = "kafka"
CODECS = ("zstd", "gzip", "lz4", "snappy", "none")
OPTIONS = ("repos_topic", "compression", "idempotence", "linger_ms", "partitions", "replication")
DEFAULT_LINGER_MS = 20
DEFAULT_PARTITIONS = 6
_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")
_HOST_PORT = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
_BOOLS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


@dataclass(frozen=True, slots=True)
class KafkaTarget:
    """A parsed Kafka sink URL."""

    bootstrap: tuple[str, ...]
    """`host:port` of each bootstrap broker."""
    topic: str
    """The records topic."""
    repos_topic: str
    compression: str
    """One of CODECS; `none` sends uncompressed batches."""
    idempotence: bool
    linger_ms: int
    partitions: int
    replication: int | None
    """None: min(3, the cluster's brokers), decided when a topic is created."""

    @property
    def url(self) -> str:
        """The normalised URL (every option spelled out): what a job stores and shows."""
        options = {
            "repos_topic": self.repos_topic,
            "compression": self.compression,
            "idempotence": str(self.idempotence).lower(),
            "linger_ms": self.linger_ms,
            "partitions": self.partitions,
        }
        if self.replication is not None:
            options["replication"] = self.replication
        return f"{SCHEME}://{','.join(self.bootstrap)}/{self.topic}?{urlencode(options)}"

    @property
    def codec(self) -> str | None:
        """The producer's `compression_type`."""
        return None if self.compression == "none" else self.compression


def is_kafka_url(text: str) -> bool:
    return text.strip().lower().startswith(f"{SCHEME}://")


def parse_kafka_url(text: str) -> KafkaTarget:
    """Validate a `kafka://` URL (syntax and the client's codecs; nothing is contacted)."""
    value = text.strip()
    try:
        parts = urlsplit(value)
    except ValueError as exc:
        raise SinkUrlError(f"sink: {value!r}: {exc}") from None
    if "@" in parts.netloc:
        raise SinkUrlError(
            f"sink: {_shown(value)!r}: a Kafka URL takes no credentials (PLAINTEXT listeners only)"
        )
    bootstrap = _bootstrap(value, parts.netloc)
    topic = parts.path.removeprefix("/")
    if not _TOPIC.fullmatch(topic):
        raise SinkUrlError(
            f"sink: {value!r} names no valid topic (want kafka://host:port/TOPIC; a topic is "
            "1-249 characters of letters, digits, '.', '_' and '-')"
        )
    if parts.fragment:
        raise SinkUrlError(f"sink: {value!r}: a Kafka URL takes no #fragment")
    options = _options(value, parts.query)
    repos_topic = options.get("repos_topic", f"{topic}.repos")
    if not _TOPIC.fullmatch(repos_topic) or repos_topic == topic:
        raise SinkUrlError(f"sink: {value!r}: repos_topic must be a valid topic other than {topic}")
    return KafkaTarget(
        bootstrap=bootstrap,
        topic=topic,
        repos_topic=repos_topic,
        compression=_compression(value, options.get("compression")),
        idempotence=_bool(value, "idempotence", options.get("idempotence", "true")),
        linger_ms=_int(value, "linger_ms", options.get("linger_ms"), 0) or DEFAULT_LINGER_MS,
        partitions=_int(value, "partitions", options.get("partitions"), 1) or DEFAULT_PARTITIONS,
        replication=_int(value, "replication", options.get("replication"), 1),
    )


def _shown(value: str) -> str:
    scheme, _, rest = value.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def _bootstrap(value: str, netloc: str) -> tuple[str, ...]:
    hosts = tuple(h for h in netloc.split(",") if h)
    if not hosts:
        raise SinkUrlError(f"sink: {value!r} names no broker (want kafka://host:port/TOPIC)")
    for host in hosts:
        match = _HOST_PORT.fullmatch(host)
        if match is None or not 0 < int(match.group(2)) < 65536:
            raise SinkUrlError(f"sink: {value!r}: {host!r} is not host:port")
    return hosts


def _options(value: str, query: str) -> dict[str, str]:
    try:
        pairs = parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query))
    except ValueError:
        raise SinkUrlError(f"sink: {value!r}: malformed options {query!r}") from None
    options: dict[str, str] = {}
    for key, item in pairs:
        if key not in OPTIONS:
            raise SinkUrlError(
                f"sink: {value!r}: unknown option {key!r} (known: {', '.join(OPTIONS)})"
            )
        if key in options:
            raise SinkUrlError(f"sink: {value!r}: option {key!r} given twice")
        options[key] = item
    return options


def _compression(value: str, wanted: str | None) -> str:
    from aiokafka import codec

    available = {
        "zstd": codec.has_zstd(),
        "gzip": codec.has_gzip(),
        "lz4": codec.has_lz4(),
        "snappy": codec.has_snappy(),
        "none": True,
    }
    if wanted is None:
        return "zstd" if available["zstd"] else "gzip"
    name = wanted.lower()
    if name not in CODECS:
        raise SinkUrlError(f"sink: {value!r}: compression must be one of {', '.join(CODECS)}")
    if not available[name]:
        raise SinkUrlError(
            f"sink: {value!r}: this Kafka client cannot compress with {name} "
            f"(pip install 'aiokafka[{name}]')"
        )
    return name


def _bool(value: str, key: str, text: str) -> bool:
    flag = _BOOLS.get(text.lower())
    if flag is None:
        raise SinkUrlError(f"sink: {value!r}: {key} must be true or false, not {text!r}")
    return flag


def _int(value: str, key: str, text: str | None, least: int) -> int | None:
    """The option's whole number (None when not given)."""
    if text is None:
        return None
    if not text.isdigit() or int(text) < least:
        raise SinkUrlError(f"sink: {value!r}: {key} must be a whole number >= {least}")
    return int(text)

"""The flags of `skyfill ingest` and `skyfill index`, the live topology on Redis streams."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field

from skyfill.atproto.identity.plc import DEFAULT_PLC_URL
from skyfill.errors import UsageError
from skyfill.flags import check_ranges, flag


def _redis_url(url: str) -> None:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise UsageError(f"--state: expected a redis:// or rediss:// URL, not {url[:80]!r}")


def _live_help() -> dict:
    return flag(help="Name of the live streams in Redis (several topologies can share one).")


@dataclass(frozen=True, kw_only=True, slots=True)
class IngestConfig:
    from_host: str = field(
        default="",
        metadata=flag(metavar="URL", help="The PDS or relay whose event stream is ingested."),
    )
    state: str = field(
        default="",
        metadata=flag(metavar="URL", help="The Redis (with AOF) holding the streams."),
    )
    name: str = field(default="live", metadata=_live_help())
    partitions: int = field(
        default=4,
        metadata=flag(
            min=1,
            max=1024,
            help="Event streams, by a hash of the DID (fixed by the first ingester).",
        ),
    )
    cursor: int | None = field(
        default=None,
        metadata=flag(
            min=0,
            metavar="SEQ",
            help="Start after this seq when no cursor is saved (default: the live head).",
        ),
    )
    list_repos: bool = field(
        default=True,
        metadata=flag(
            negatable=True,
            help="Put every repo the host lists (listRepos) into the backfill streams.",
        ),
    )
    labels: list[str] = field(
        default_factory=list,
        metadata=flag(
            multiple=True,
            metavar="URL",
            help="Also write this labeler's labels (subscribeLabels) into its label "
            "stream, with its own cursor (repeatable).",
        ),
    )
    add_repo: list[str] = field(
        default_factory=list,
        metadata=flag(
            multiple=True,
            metavar="DID",
            help="Only put this repo into its backfill stream (repeatable), then exit.",
        ),
    )
    until_live: bool = field(
        default=False,
        metadata=flag(help="Stop once the stream has reached the head and the listing is done."),
    )
    duration: float | None = field(
        default=None,
        metadata=flag(min=0, metavar="SECONDS", help="Stop after this many seconds."),
    )
    allow_private_network: bool = field(
        default=False,
        metadata=flag(help="Allow hosts on loopback/private addresses (tests, local networks)."),
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        _redis_url(self.state)
        for url in self.labels:
            if not url.startswith(("http://", "https://")):
                raise UsageError(f"labels must be an http(s) URL, not {url!r}")
        if self.add_repo or (self.labels and not self.from_host):
            return
        if not self.from_host.startswith(("http://", "https://")):
            raise UsageError("--from-host: give the PDS or relay as an http(s) URL")


def _worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True, kw_only=True, slots=True)
class IndexConfig:
    sink: str = field(
        default="",
        metadata=flag(
            metavar="URL",
            help="postgresql://… (or sqlite:///path.db): the tables the workers keep current.",
        ),
    )
    state: str = field(
        default="",
        metadata=flag(metavar="URL", help="The Redis (with AOF) holding the streams."),
    )
    name: str = field(default="live", metadata=_live_help())
    plc_url: str = field(
        default=DEFAULT_PLC_URL, metadata=flag(help="PLC directory used to resolve did:plc.")
    )
    verify_signatures: bool = field(
        default=True,
        metadata=flag(
            negatable=True,
            help="Verify each commit (signature, MST proof, since) as `skyfill firehose` does.",
        ),
    )
    max_concurrent: int = field(
        default=8, metadata=flag(min=1, help="Snapshots (getRepo) and DID resolutions at once.")
    )
    batch_size: int = field(
        default=1000, metadata=flag(min=1, help="Events per sink transaction and partition.")
    )
    until_idle: float | None = field(
        default=None,
        metadata=flag(
            min=0,
            min_open=True,
            metavar="SECONDS",
            help="Stop once no stream has had anything new for this long and no snapshot "
            "is pending.",
        ),
    )
    duration: float | None = field(
        default=None,
        metadata=flag(min=0, metavar="SECONDS", help="Stop after this many seconds."),
    )
    lease_seconds: float = field(
        default=10.0,
        metadata=flag(
            min=1,
            help="A partition's lease (and a worker's heartbeat) lapses after this long "
            "without renewal: how soon a dead worker's partitions are taken over.",
        ),
    )
    worker_id: str = field(
        default_factory=_worker_id,
        metadata=flag(help="This worker's name in the consumer groups (default: host-pid)."),
    )
    allow_private_network: bool = field(
        default=False,
        metadata=flag(help="Allow hosts on loopback/private addresses (tests, local networks)."),
    )

    def __post_init__(self) -> None:
        check_ranges(self)
        _redis_url(self.state)
        if "://" not in self.sink or self.sink.startswith("parquet"):
            raise UsageError("--sink: the index workers write postgresql:// (or sqlite:///)")

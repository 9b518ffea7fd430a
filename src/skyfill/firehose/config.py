"""The firehose consumer's configuration, and the flags of `skyfill firehose` that set it."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from skyfill.atproto.identity.plc import DEFAULT_PLC_URL
from skyfill.backfill.collections import parse_collections
from skyfill.backfill.config import parse_size
from skyfill.backfill.window import resolve_since
from skyfill.errors import UsageError
from skyfill.flags import check_ranges, flag
from skyfill.labels.config import parse_labelers

BACKGROUND = {
    "batch_size": 5,
    "batch_delay": 2.0,
    "max_concurrent": 2,
    "max_memory": 512 << 20,
    "decode_workers": 0,
    "shards": 1,
}
"""`--background`: the conservative throttles of the AppView's own Python backfill service
(BACKFILL_BATCH_SIZE=5, BACKFILL_BATCH_DELAY_MS=2000, BACKFILL_MAX_CONCURRENT=2,
BACKFILL_MAX_MEMORY_MB=512): a few events a second, beside a live service, in one process."""

MAX_DEFAULT_WORKERS = 8
LOG_BATCH = 5000
SQL_BATCH = 1000
_STREAM_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _since(text: str) -> str:
    """`all` stays `all`; a window is pinned to an ISO time when the stream is configured."""
    if text.strip().lower() == "all":
        return "all"
    pinned = resolve_since(text)
    assert pinned is not None
    return pinned


@dataclass(frozen=True, kw_only=True, slots=True)
class FirehoseConfig:
    """A field with `flag(...)` metadata is a flag of `skyfill firehose` (and a key of its
    `--config` file, and a SKYFILL_* variable)."""

    from_host: str = field(
        default="",
        metadata=flag(
            metavar="URL",
            help="The PDS or relay whose event stream (com.atproto.sync.subscribeRepos) to read.",
        ),
    )
    sink: str = field(
        default="",
        metadata=flag(
            help="Where events go: sqlite:///PATH or postgresql://… (the `records` and `repos` "
            "tables, kept current), kafka://HOST:PORT/TOPIC (keyed messages, tombstones for "
            "deletes), or a directory (an append-only Parquet event log).",
        ),
    )
    stream_id: str = field(
        default="",
        metadata=flag(
            help="Name of this stream's state (cursor, repos) under WORKDIR/streams/; "
            "default: firehose-<host>-<port>. Run the same command again to resume.",
        ),
    )
    since: str | None = field(
        default=None,
        metadata=flag(
            parse=_since,
            metavar="WINDOW",
            help="Start at the first event inside the window: 7d, 12h, 2026-11-01, an ISO time, "
            "or all (every event the host keeps). Used when no cursor is saved.",
        ),
    )
    cursor: int | None = field(
        default=None,
        metadata=flag(min=0, metavar="SEQ", help="Start after this seq (instead of --since)."),
    )
    reset_cursor: bool = field(
        default=False,
        metadata=flag(
            help="Forget the saved cursor and start from --since/--cursor (the rows stay)."
        ),
    )
    until_live: bool = field(
        default=False,
        metadata=flag(
            help="Stop (exit 0, with a summary) once caught up with the host's head; "
            "otherwise keep following."
        ),
    )
    duration: float | None = field(
        default=None,
        metadata=flag(min=0, metavar="SECONDS", help="Stop after this many seconds."),
    )
    plc_url: str = field(
        default=DEFAULT_PLC_URL, metadata=flag(help="PLC directory used to resolve did:plc.")
    )
    background: bool = field(
        default=False,
        metadata=flag(
            help="Conservative throttles for running beside a live service: batch size 5, "
            "batch delay 2 s, 2 concurrent, max memory 512m (flags given explicitly win)."
        ),
    )
    batch_size: int | None = field(
        default=None,
        metadata=flag(
            min=1,
            help="Events per sink transaction (the cursor is saved with each); while the "
            "sink still writes one, the next grows up to 8 times that (not with --batch-delay). "
            "Default: 5000 into a Parquet event log (a file each), else 1000.",
        ),
    )
    batch_delay: float = field(
        default=0.0, metadata=flag(min=0, help="Seconds to pause after each batch.")
    )
    max_concurrent: int = field(
        default=8,
        metadata=flag(min=1, help="Repos re-fetched (getRepo) and DIDs resolved at once."),
    )
    decode_workers: int | None = field(
        default=None,
        metadata=flag(
            min=0,
            help="With --shards 1: worker processes that decode and verify events while the "
            "consumer applies them (0: all in one process). Default: one per CPU when there "
            "are two or more and signatures are verified; none with --no-verify-signatures. "
            "Shards decode in their own process unless this is given.",
        ),
    )
    shards: int | None = field(
        default=None,
        metadata=flag(
            min=1,
            max=64,
            help="Processes the stream is split over by DID: one reads the host and routes "
            "each event to the shard that owns its repo, which decodes, verifies and writes "
            "it (each with its cursor in the sink). Default: the count the stream was "
            "started with; for a new stream one per CPU (up to 8).",
        ),
    )
    max_memory: int | None = field(
        default=None,
        metadata=flag(
            parse=parse_size,
            help="RSS above which reading pauses until memory is returned, e.g. 512m. "
            "Default: no limit.",
        ),
    )
    flush_seconds: float = field(
        default=2.0,
        metadata=flag(
            min=0,
            min_open=True,
            help="Longest time between sink transactions (and cursor saves) while events come.",
        ),
    )
    collections: list[str] | None = field(
        default=None,
        metadata=flag(
            parse=parse_collections,
            help="Keep only records of these collections: comma-separated NSIDs or prefixes "
            "(app.bsky.feed.post,app.bsky.graph.*).",
        ),
    )
    dids_file: str | None = field(
        default=None,
        metadata=flag(name="dids", metavar="FILE", help="Keep only events of the DIDs in FILE."),
    )
    verify_signatures: bool = field(
        default=True,
        metadata=flag(
            negatable=True,
            help="Verify each commit (signature with the account's #atproto key, ops inverted "
            "to prevData, since against the stored rev); a repo that fails is re-fetched.",
        ),
    )
    allow_private_network: bool = field(
        default=False,
        metadata=flag(
            help="Allow hosts and PLC on loopback/private addresses (tests, local networks)."
        ),
    )
    labels: list[str] = field(
        default_factory=list,
        metadata=flag(
            multiple=True,
            metavar="URL",
            help="Also follow this labeler's label stream into the same sink (as `skyfill "
            "labels` does: the labels table and view, or the Parquet label log); repeatable.",
        ),
    )
    max_repo_bytes: int = 1 << 30
    """Largest repo CAR a re-fetch accepts."""
    reconnect_max: float = 30.0
    """Longest backoff between reconnections (starts at 0.5 s, doubles, with jitter)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if not self.from_host.startswith(("http://", "https://")):
            raise UsageError(f"from-host must be an http(s) URL, not {self.from_host!r}")
        if not self.sink:
            raise UsageError("give a sink: --sink sqlite:///PATH, postgresql://… or a directory")
        if self.stream_id and not _STREAM_ID.match(self.stream_id):
            raise UsageError(f"stream-id: letters, digits, . _ - only, not {self.stream_id!r}")
        if not self.plc_url.startswith(("http://", "https://")):
            raise UsageError(f"plc-url must be an http(s) URL, not {self.plc_url!r}")
        if self.max_memory is not None and self.max_memory < 128 << 20:
            raise UsageError("max-memory must be at least 128m (skyfill itself needs ~100m)")
        object.__setattr__(self, "collections", parse_collections(self.collections))
        object.__setattr__(self, "labels", parse_labelers(self.labels))
        if self.labels and self.sink.lower().startswith("kafka://"):
            raise UsageError("--labels: labels do not go to a Kafka sink (give a SQL sink)")
        if not self.stream_id:
            object.__setattr__(self, "stream_id", default_stream_id(self.from_host))

    def with_background(self, explicit: set[str]) -> FirehoseConfig:
        """The `--background` preset applied to the throttles not given explicitly."""
        if not self.background:
            return self
        return replace(self, **{k: v for k, v in BACKGROUND.items() if k not in explicit})

    def events_per_batch(self) -> int:
        """--batch-size, else 5000 for a Parquet event log (a batch is a file of it: fewer,
        larger files, for its readers too, and less CPU: docs/BENCHMARKS.md §37) and 1000
        for a database or Kafka (a transaction each)."""
        if self.batch_size is not None:
            return self.batch_size
        return LOG_BATCH if "://" not in self.sink else SQL_BATCH

    def default_shards(self) -> int:
        """A new stream's shard count when --shards is not given: one per CPU (up to 8).
        One process reaches its ceiling (~19k events/s unverified on 2 cores); shards go
        past it, and verified they beat one process with decode workers, with less CPU
        (nothing shipped to workers and back): docs/BENCHMARKS.md §37."""
        return max(1, min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS))

    def workers(self) -> int:
        """Decode workers: as given, else one per CPU when there are two or more and the
        stream verifies signatures. Without verification what is left to decode is light:
        shipping it to workers and back cost more than it saved (the consumer's process
        alone was as fast into Parquet and ~5 % faster into PostgreSQL, with a quarter
        less CPU: docs/BENCHMARKS.md §35)."""
        if self.decode_workers is not None:
            return self.decode_workers
        if not self.verify_signatures:
            return 0
        cpus = os.cpu_count() or 1  # as the backfill's decode processes count them
        return 0 if cpus < 2 else min(cpus, MAX_DEFAULT_WORKERS)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_stream_id(url: str) -> str:
    """`http://localhost:2583` -> `firehose-localhost-2583`."""
    host = url.split("://", 1)[1].split("/", 1)[0]
    return "firehose-" + re.sub(r"[^A-Za-z0-9.-]", "-", host)

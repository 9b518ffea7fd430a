"""The backfill job's configuration, and the flags of `skyfill run` that set it."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from skyfill.atproto import fastrepo
from skyfill.atproto.identity.plc import DEFAULT_PLC_URL
from skyfill.atproto.syntax import is_valid_nsid
from skyfill.backfill.collections import parse_collections
from skyfill.backfill.window import resolve_since
from skyfill.engine.settings import EngineSettings
from skyfill.errors import UsageError
from skyfill.flags import check_ranges, flag
from skyfill.net.settings import HttpSettings
from skyfill.net.transport import HttpClient, parse_http_client
from skyfill.ratelimit.local import LimitSettings
from skyfill.ratelimit.spec import RateSpec, parse_host_rates, parse_rate
from skyfill.sinks.factory import parse_sink_url

GIB = 1 << 30
ENGINE = EngineSettings()  # the engine's defaults, declared there once


def parse_size(text: str) -> int:
    """`1g`, `300m`, `512k` or a plain byte count."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}
    value = text.strip().lower().removesuffix("b").removesuffix("i")
    try:
        if value and value[-1] in units:
            return int(float(value[:-1]) * units[value[-1]])
        return int(value)
    except ValueError:
        raise UsageError(f"not a size: {text!r} (want e.g. 1g, 300m or a byte count)") from None


def _default_decode_processes() -> int:
    """0 with the C decoder (it runs on a thread per core, the GIL released); else
    min(2, cores) processes for the Python decoder."""
    return 0 if fastrepo.ENABLED else min(2, os.cpu_count() or 1)


def _shared(rate: RateSpec, share: int) -> RateSpec:
    return RateSpec(rate.requests, rate.window * share)


def _host_rates(entries: tuple[str, ...] | list[str]) -> dict[str, str]:
    return {host: str(rate) for host, rate in parse_host_rates(list(entries)).items()}


@dataclass(frozen=True, kw_only=True, slots=True)
class BackfillConfig:
    """A field with `flag(...)` metadata is a flag of `skyfill run`, `plan` and `submit`
    (and a key of their `--config` file, and a SKYFILL_* variable); the others are fixed."""

    dids_file: str | None = field(
        default=None,
        metadata=flag(
            name="dids",
            metavar="FILE",
            help="File with one DID per line (# comments and blank lines ignored); this, "
            "--from-host, --from-relay, or any of them together.",
        ),
    )
    from_hosts: list[str] = field(
        default_factory=list,
        metadata=flag(
            name="from-host",
            multiple=True,
            metavar="URL",
            help="List every repo of this PDS or relay (com.atproto.sync.listRepos) while the "
            "job runs; repeatable, and combinable with --dids (DIDs are de-duplicated).",
        ),
    )
    from_relays: list[str] = field(
        default_factory=list,
        metadata=flag(
            name="from-relay",
            multiple=True,
            metavar="URL",
            help="List this relay's hosts (com.atproto.sync.listHosts), then every repo of each "
            "host on the host itself (its listRepos); offline and banned hosts are reported, "
            "not listed. Repeatable, and combinable with --from-host and --dids.",
        ),
    )
    collection: str | None = field(
        default=None,
        metadata=flag(
            metavar="NSID",
            help="With --from-host/--from-relay: only repos holding this collection "
            "(listReposByCollection where the host offers it; elsewhere all repos, keeping "
            "only this collection).",
        ),
    )
    list_limit: int = field(
        default=1000,
        metadata=flag(
            min=1,
            max=1000,
            help="Repos per listRepos page, hosts per listHosts page (--from-host, --from-relay).",
        ),
    )
    previous: str | None = field(
        default=None,
        metadata=flag(
            metavar="JOB_ID",
            help="Refresh: also take every DID of this finished job (in the same workdir), and "
            "fetch only repos whose rev changed since (getLatestCommit); the others keep its rows.",
        ),
    )
    """Stored as the finished job's directory, which the command resolves from its id."""
    job_id: str = field(metadata=flag(help="Job id (default: backfill-<date>-<random>)."))
    plc_url: str = field(
        default=DEFAULT_PLC_URL, metadata=flag(help="PLC directory used to resolve did:plc.")
    )
    concurrency: int = field(default=32, metadata=flag(min=1, help="Repos fetched at once."))
    batch_size: int = field(
        default=ENGINE.batch_size,
        metadata=flag(min=1, help="DIDs per batch (one worker task each)."),
    )
    max_repo_bytes: int = field(
        default=GIB,
        metadata=flag(
            parse=parse_size,
            default_text="1g",
            min=1,
            help="Largest repo CAR accepted (e.g. 1g, 300m); larger ones end `failed`.",
        ),
    )
    stream_repo_bytes: int = field(
        default=64 << 20,
        metadata=flag(
            parse=parse_size,
            default_text="64m",
            min=1,
            help="Repo CARs larger than this go to a file as they arrive and are decoded "
            "in bounded batches of records, written to disk (memory stays bounded).",
        ),
    )
    verify_signatures: bool = field(
        default=True,
        metadata=flag(
            negatable=True,
            help="Verify each repo's commit signature with its account's #atproto key; "
            "a repo that fails ends invalid_repo (bad_signature). Off: said in the manifest "
            "and the report.",
        ),
    )
    attempts: int = field(
        default=3,
        metadata=flag(
            min=1, help="Tries per DID for 429/5xx/timeouts/network errors within a task."
        ),
    )
    retries: int = field(
        default=ENGINE.retries,
        metadata=flag(
            min=0, help="Retry phases for DIDs that still failed with a retryable error."
        ),
    )
    retry_backoff: float = field(
        default=ENGINE.retry_backoff,
        metadata=flag(min=0, help="Seconds before retry phase 1; doubles per phase."),
    )
    since: str | None = field(
        default=None,
        metadata=flag(
            parse=resolve_since,
            default_text="all",
            help="Keep records made since: 7d, 12h, 2025-01-01, an ISO time, or all "
            "(by the rkey's TID time, else a valid createdAt).",
        ),
    )
    """Stored as the pinned ISO time (UTC), so that a resumed job keeps the same window."""
    collections: list[str] | None = field(
        default=None,
        metadata=flag(
            parse=parse_collections,
            metavar="NSIDS",
            help="Keep only records of these collections: comma-separated NSIDs or prefixes "
            "ending in *, e.g. app.bsky.feed.post,app.bsky.graph.* (a list in a config file). "
            "Default: all.",
        ),
    )
    """Repos' record_count counts the kept records."""
    sink: str = field(
        default="parquet",
        metadata=flag(
            metavar="URL",
            help="Where the dataset goes: parquet (<job>/output/), sqlite:///path.db, "
            "postgresql://user@host:port/db (tables records and repos, refreshed per DID), or "
            "kafka://host:port/TOPIC (keyed messages on TOPIC and TOPIC.repos). "
            "A password in the URL is used, never stored: resume reads PGPASSWORD/~/.pgpass.",
        ),
    )
    """Never holds a password (it is taken out here), so that the stored config is safe."""
    fan_in: int | None = field(
        default=None,
        metadata=flag(
            min=2,
            shown="32 (10 with --max-memory)",
            help="Files merged into one per level of the aggregation.",
        ),
    )
    decode_processes: int = field(
        default_factory=_default_decode_processes,
        metadata=flag(
            shown="0 (C decoder), else min(2, cores)",
            min=0,
            help="Processes decoding CARs (0: in-process; threads with the C decoder).",
        ),
    )
    fetch_processes: int | None = field(
        default=None,
        metadata=flag(
            min=0,
            shown="one per core (a distributed worker: 1) for 1,000 DIDs or more (or a host "
            "listing), else 0",
            help="Processes that resolve, fetch and decode repos, each with 1/N of every "
            "host's rate limit and of --concurrency (0: all in this process).",
        ),
    )
    read_timeout: float = field(
        default=60.0,
        metadata=flag(
            name="timeout",
            min=0,
            min_open=True,
            help="Seconds of silence allowed while reading a response.",
        ),
    )
    http_client: HttpClient = field(
        default="lean",
        metadata=flag(
            metavar="lean|aiohttp",
            parse=parse_http_client,
            help="HTTP client of the fetches: lean (HTTP/1.1 on asyncio, about a third of "
            "aiohttp's CPU a request; asks for no compression) or aiohttp.",
        ),
    )
    rate_limit: str = field(
        default="3000/5m",
        metadata=flag(
            help="Requests per window per host (PDS, PLC, did:web), e.g. 3000/5m, 100/1m. "
            "Tightened live from the hosts' RateLimit-* headers."
        ),
    )
    hosts: dict[str, str] = field(
        default_factory=dict,
        metadata=flag(
            parse=_host_rates,
            multiple=True,
            metavar="HOST=RATE",
            help="A host's own rate limit, e.g. pds.example.com=100/1m (repeatable; in a config "
            "file: a mapping `hosts: {pds.example.com: 100/1m}`).",
        ),
    )
    host_concurrency: int = field(
        default=8, metadata=flag(min=1, help="Requests in flight per host at most.")
    )
    adaptive: bool = field(
        default=True,
        metadata=flag(
            negatable=True,
            help="Lower a host's rate when it answers 429, slows down against its usual "
            "latency, or fails most requests; raise it back as it recovers.",
        ),
    )
    merge_in_memory: int = field(
        default=ENGINE.merge_in_memory,
        metadata=flag(
            parse=parse_size,
            default_text="256m",
            min=0,
            help="Aggregate by one sort in memory when the task files hold up to this much "
            "(uncompressed; 0: always the streaming merge; ignored with --max-memory).",
        ),
    )
    max_memory: int | None = field(
        default=ENGINE.max_memory,
        metadata=flag(
            parse=parse_size,
            help="RSS (with decoders) above which no new fetch starts, e.g. 2g; repos whose "
            "decoding would not fit are refused (failed). Default: no limit.",
        ),
    )
    backoff_max: float = field(
        default=60.0,
        metadata=flag(
            min=0,
            help="Longest backoff between tries of a DID (starts at 1 s, doubles, with jitter).",
        ),
    )
    """Also the longest Retry-After honoured within a task."""
    sample_interval: float = field(
        default=ENGINE.sample_interval,
        metadata=flag(
            min=0,
            help="Seconds between points of the job's recorded timeline (for `skyfill report` "
            "and the dashboard); 0: only at the end of each run.",
        ),
    )
    allow_private_network: bool = field(
        default=False,
        metadata=flag(
            help="Allow PDS/PLC endpoints on loopback/private addresses (tests, local "
            "networks); refused otherwise."
        ),
    )
    follow: bool = field(
        default=False,
        metadata=flag(
            help="Keep the output current after the backfill: the host's event stream is "
            "recorded from its head before the first snapshot is fetched, applied after "
            "the job (events at or below a snapshot's rev dropped) and then followed "
            "(skyfill run only; see --follow-host).",
        ),
    )
    follow_host: str | None = field(
        default=None,
        metadata=flag(
            metavar="URL",
            help="The PDS or relay whose stream --follow follows (implies --follow; "
            "default: the one --from-host or --from-relay).",
        ),
    )
    labels: list[str] = field(
        default_factory=list,
        metadata=flag(
            multiple=True,
            metavar="URL",
            help="With --follow: also follow this labeler's labels into the sink (as "
            "`skyfill labels` does); repeatable.",
        ),
    )
    retry_base_seconds: float = 1.0
    """First backoff between tries; doubles each time, with jitter."""
    inline_decode_bytes: int = 256 * 1024
    """CARs up to this size are decoded in the main process: for small repos, shipping the
    work to another process costs more than the decode itself."""
    connect_timeout: float = 10.0
    """Seconds to connect to a host."""
    total_timeout: float = 900.0
    """Seconds for one whole repo download."""
    planned_dids: int | None = None
    """DIDs of the job's DID file, set when it is planned (None: a host listing, or not
    planned yet): what `--fetch-processes` unset goes by."""

    def __post_init__(self) -> None:
        check_ranges(self)
        for name in ("connect_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name.replace('_', '-')} must be positive")
        if self.max_memory is not None and self.max_memory < 128 << 20:
            raise UsageError("max-memory must be at least 128m (skyfill itself needs ~100m)")
        if not (self.dids_file or self.from_hosts or self.from_relays or self.previous):
            raise UsageError(
                "give DIDs (--dids FILE), hosts to list (--from-host URL) "
                "or relays whose hosts to list (--from-relay URL)"
            )
        for name, urls in (("from-host", self.from_hosts), ("from-relay", self.from_relays)):
            for url in urls:
                if not url.startswith(("http://", "https://")):
                    raise UsageError(f"{name} must be an http(s) URL, not {url!r}")
        self._check_follow()
        if self.collection is not None and not is_valid_nsid(self.collection):
            raise UsageError(f"collection: not an NSID: {self.collection!r}")
        parse_rate(self.rate_limit)
        parse_http_client(self.http_client)
        parse_host_rates(self.hosts)
        if not self.plc_url.startswith(("http://", "https://")):
            raise UsageError(f"plc-url must be an http(s) URL, not {self.plc_url!r}")
        # Normalised forms: the patterns de-duplicated, the sink URL without a password
        # (and a sqlite path made absolute), so that the stored config is safe to show.
        if self.collection is not None and self.collections is None:
            object.__setattr__(self, "collections", [self.collection])  # listRepos fallback
        object.__setattr__(self, "from_hosts", list(dict.fromkeys(self.from_hosts)))
        object.__setattr__(self, "from_relays", list(dict.fromkeys(self.from_relays)))
        object.__setattr__(self, "collections", parse_collections(self.collections))
        object.__setattr__(self, "sink", parse_sink_url(self.sink).url)

    def _check_follow(self) -> None:
        for url in self.labels:
            if not url.startswith(("http://", "https://")):
                raise UsageError(f"labels must be an http(s) URL, not {url!r}")
        if self.labels and self.sink.lower().startswith("kafka://"):
            raise UsageError("--labels: labels do not go to a Kafka sink (give a SQL sink)")
        if self.follow_host is None:
            return
        if not self.follow_host.startswith(("http://", "https://")):
            raise UsageError(f"follow-host must be an http(s) URL, not {self.follow_host!r}")
        object.__setattr__(self, "follow", True)  # naming a stream to follow is following

    @property
    def stream_host(self) -> str | None:
        """The host whose stream `--follow` follows (None without --follow)."""
        if not self.follow:
            return None
        sources = [*self.from_hosts, *self.from_relays]
        if self.follow_host is None and len(sources) != 1:
            raise UsageError(
                "--follow follows one stream: name it with --follow-host URL (a relay, or "
                "the PDS) unless the job lists exactly one --from-host or --from-relay"
            )
        return self.follow_host or sources[0]

    def limit_settings(self, share: int = 1, split_rates: bool = True) -> LimitSettings:
        """The hosts' limits of one process, or of one of `share` processes that split them:
        1/share of every host's rate (the same requests over a longer window) and of the
        concurrency. `split_rates=False`: the whole rates, which a budget the processes
        lease from (distributed mode) splits instead."""
        rate_share = share if split_rates else 1
        return LimitSettings(
            default_rate=_shared(parse_rate(self.rate_limit), rate_share),
            host_rates={
                host: _shared(rate, rate_share)
                for host, rate in parse_host_rates(self.hosts).items()
            },
            host_concurrency=max(1, self.host_concurrency // share),
            global_concurrency=max(1, self.concurrency // share),
            adaptive=self.adaptive,
        )

    def http_settings(self, concurrency: int) -> HttpSettings:
        """The HTTP session of a process that fetches `concurrency` repos at once."""
        return HttpSettings(
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            total_timeout=self.total_timeout,
            max_connections=max(64, concurrency * 2),
            allow_private_network=self.allow_private_network,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BackfillConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise UsageError(f"unknown backfill config key(s): {', '.join(unknown)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise UsageError(f"backfill config: {exc}") from None

"""The backfill job's configuration: every field is a CLI flag of `skyfill run`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

from skyfill.atproto.identity.plc import DEFAULT_PLC_URL
from skyfill.atproto.nsid import is_nsid
from skyfill.backfill.collections import parse_collections
from skyfill.errors import UsageError
from skyfill.ratelimit.spec import parse_host_rates, parse_rate
from skyfill.sinks.factory import parse_sink_url

GIB = 1 << 30


@dataclass(frozen=True, kw_only=True, slots=True)
class BackfillConfig:
    dids_file: str | None = None
    """Path of the input file, one DID per line (None: only hosts are listed)."""
    job_id: str
    """The job's id, e.g. backfill-2026-11-24-3f9a."""
    plc_url: str = DEFAULT_PLC_URL
    """PLC directory used to resolve did:plc."""
    concurrency: int = 32
    """Repos fetched at once."""
    batch_size: int = 100
    """DIDs per batch (one worker task each)."""
    max_repo_bytes: int = GIB
    """Largest repo CAR accepted; larger ones end `failed`."""
    allow_private_network: bool = False
    """Allow PDS/PLC endpoints on loopback, private or link-local addresses."""
    attempts: int = 3
    """Tries per DID for retryable failures (429, 5xx, timeouts, network) within a run."""
    retry_base_seconds: float = 1.0
    """First backoff between tries; doubles each time, with jitter."""
    backoff_max: float = 60.0
    """Longest backoff between tries (and longest Retry-After honoured within a task)."""
    decode_processes: int = 2
    """Processes that decode large CARs (0: decode everything in the main process)."""
    inline_decode_bytes: int = 256 * 1024
    """CARs up to this size are decoded in the main process: for small repos, shipping the
    work to another process costs more than the decode itself."""
    connect_timeout: float = 10.0
    """Seconds to connect to a host."""
    read_timeout: float = 60.0
    """Seconds of silence allowed while reading a response."""
    total_timeout: float = 900.0
    """Seconds for one whole repo download."""
    retries: int = 3
    """Retry phases for DIDs that failed with a retryable error (0: none)."""
    retry_backoff: float = 10.0
    """Seconds before the first retry phase; doubles for each later one."""
    fan_in: int = 10
    """Files merged into one at each level of the aggregation."""
    since: str | None = None
    """Keep only records created at or after this UTC time (ISO 8601); None keeps all."""
    rate_limit: str = "3000/5m"
    """Requests per window allowed per host (PDS, PLC, did:web) unless `hosts` says more."""
    hosts: dict[str, str] = field(default_factory=dict)
    """Per-host rate limits, e.g. {"pds.example.com": "100/1m"}."""
    host_concurrency: int = 8
    """Requests in flight per host at most."""
    adaptive: bool = True
    """Lower a host's rate when it slows down or errors, raise it back when it recovers."""
    max_memory: int | None = None
    """Bytes of RSS (with decoders) above which no new fetch starts; None: no limit."""
    sample_interval: float = 5.0
    """Seconds between points of the job's recorded timeline (0: only at each run's end)."""
    collections: list[str] | None = None
    """Keep only records of these collections: NSIDs, or prefixes ending in `*` such as
    `app.bsky.graph.*`; None keeps all. Repos' record_count counts the kept records."""
    from_hosts: list[str] = field(default_factory=list)
    """Hosts (PDS or relay URLs) whose repos are listed (listRepos) while the job runs."""
    collection: str | None = None
    """With from_hosts: list only repos holding this collection (listReposByCollection
    where the host offers it; elsewhere every repo, and only this collection is kept)."""
    previous: str | None = None
    """A refresh: the directory of the finished job this one follows. Its DIDs are in this
    job too; repos whose rev did not change since are not fetched (getLatestCommit)."""
    list_limit: int = 1000
    """Repos per listRepos page asked for (1..1000)."""
    sink: str = "parquet"
    """Where the final dataset goes: `parquet` (<job>/output/), `sqlite:///path.db` or
    `postgresql://user@host:port/db`. Never holds a password (it is taken out here)."""

    def __post_init__(self) -> None:
        for name in ("concurrency", "batch_size", "max_repo_bytes", "attempts"):
            if getattr(self, name) < 1:
                raise UsageError(f"{name.replace('_', '-')} must be at least 1")
        if self.sample_interval < 0:
            raise UsageError("sample-interval must be 0 or more")
        if self.retries < 0 or self.retry_backoff < 0:
            raise UsageError("retries and retry-backoff must be 0 or more")
        if self.fan_in < 2:
            raise UsageError("fan-in must be at least 2")
        if self.decode_processes < 0:
            raise UsageError("decode-processes must be 0 or more")
        for name in ("connect_timeout", "read_timeout", "total_timeout"):
            if getattr(self, name) <= 0:
                raise UsageError(f"{name.replace('_', '-')} must be positive")
        if self.host_concurrency < 1:
            raise UsageError("host-concurrency must be at least 1")
        if self.max_memory is not None and self.max_memory < 128 << 20:
            raise UsageError("max-memory must be at least 128m (skyfill itself needs ~100m)")
        if not 1 <= self.list_limit <= 1000:
            raise UsageError("list-limit must be between 1 and 1000")
        if not self.dids_file and not self.from_hosts and not self.previous:
            raise UsageError("give DIDs (--dids FILE) or hosts to list (--from-host URL)")
        for host in self.from_hosts:
            if not host.startswith(("http://", "https://")):
                raise UsageError(f"from-host must be an http(s) URL, not {host!r}")
        if self.collection is not None and not is_nsid(self.collection):
            raise UsageError(f"collection: not an NSID: {self.collection!r}")
        parse_rate(self.rate_limit)
        parse_host_rates(self.hosts)
        if not self.plc_url.startswith(("http://", "https://")):
            raise UsageError(f"plc-url must be an http(s) URL, not {self.plc_url!r}")
        # Normalised forms: the patterns de-duplicated, the sink URL without a password
        # (and a sqlite path made absolute), so that the stored config is safe to show.
        if self.collection is not None and self.collections is None:
            object.__setattr__(self, "collections", [self.collection])  # listRepos fallback
        object.__setattr__(self, "from_hosts", list(dict.fromkeys(self.from_hosts)))
        object.__setattr__(self, "collections", parse_collections(self.collections))
        object.__setattr__(self, "sink", parse_sink_url(self.sink).url)

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

"""How the engine runs a job; read from the job's config so that resume behaves the same."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

MEMORY_LIMITED_FLUSH_ROWS = 10_000
MEMORY_LIMITED_FAN_IN = 10


@dataclass(frozen=True, kw_only=True, slots=True)
class EngineSettings:
    batch_size: int = 100
    """Items per batch (one worker task each)."""
    parallel_tasks: int = 4
    """Worker tasks running at once in this process ..."""
    max_open_tasks: int = 200
    """... or up to this many while the handler says the open ones mostly wait (throttled
    hosts): items of other hosts keep flowing instead of queueing behind a slow host."""
    retries: int = 3
    """Retry phases (retry_1..n) after the backfill phase, for retryable failures."""
    retry_backoff: float = 10.0
    """Seconds to wait before retry phase 1; doubles for each later phase."""
    fan_in: int = 32
    """Files merged into one at each level of the aggregation. Each level rewrites every
    row, so fewer levels is faster; a merge holds `batch_rows / fan_in` rows (at least
    4096) of each input, ~60 MB for 32 inputs of the backfill's records."""
    merge_in_memory: int = 256 << 20
    """Task files up to this size in all (uncompressed) are aggregated by one sort in
    memory, not by the streaming merge (0: always streamed; not under max_memory)."""
    max_memory: int | None = None
    """A memory limit for the job (bytes); the aggregation then merges one file at a time."""
    flush_rows: int = 100_000
    """Commit a segment once this many rows are buffered."""
    flush_items: int = 200
    """... or once this many items are finished."""
    flush_seconds: float = 3.0
    """... or once the oldest finished item has waited this long."""
    control_poll_seconds: float = 0.5
    """How often a running job checks for cancel/pause requests and beats its heartbeat."""
    stats_every_polls: int = 4
    """Publish the handler's live statistics every this many polls."""
    sample_interval: float = 5.0
    """Record a point of the job's timeline (StateStore.append_sample) at most this often,
    when the statistics are published; sparser in long jobs (at most ~10,000 points).
    0: only at the end of each run."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> EngineSettings:
        names = {f.name for f in fields(cls)}
        values = {k: v for k, v in config.items() if k in names and v is not None}
        if values.get("max_memory") is not None:  # buffer fewer rows per task, merge fewer
            values.setdefault("flush_rows", MEMORY_LIMITED_FLUSH_ROWS)
            values.setdefault("fan_in", MEMORY_LIMITED_FAN_IN)
        return cls(**values)

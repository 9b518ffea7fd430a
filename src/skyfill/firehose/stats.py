"""What a stream has done: counters, rates and lag, as one snapshot for the progress
lines, the summary, `skyfill status` and the Prometheus metrics."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime


@dataclass(slots=True)
class StreamCounters:
    received: int = 0
    """Frames read from the host (events, infos, errors, malformed ones)."""
    applied: int = 0
    """Events that changed (or confirmed) the sink: commits, identities, accounts, syncs."""
    skipped: int = 0
    """Events not applied: already applied (rev not newer), filtered out, unknown types."""
    malformed: int = 0
    """Frames that could not be read, or whose commit did not verify (logged with seq)."""
    ops: int = 0
    """Record operations applied (creates, updates, deletes)."""
    desynchronized: int = 0
    """Times a repo was found out of step (gap, #sync, failed verification, reactivation)."""
    resynced: int = 0
    """Repos fetched again whole (getRepo) and applied."""
    resync_failed: int = 0
    no_prev_data: int = 0
    """Commits accepted without the inversion check, because the host sent no prevData."""
    proofs_verified: int = 0
    signatures_verified: int = 0
    reconnects: int = 0
    held: int = 0
    """Events held back for desynchronized repos (applied after their re-fetch if newer)."""
    batches: int = 0
    bytes: int = 0
    seq: int | None = None
    """The last seq read."""
    cursor: int | None = None
    """The last seq saved (with the rows it covers)."""
    head: int | None = None
    """The host's head seq, as last probed (or the last seq read, if newer)."""
    event_time: str | None = None
    """The `time` of the last event read."""
    started: float = field(default_factory=time.time)
    live: bool = False
    """Caught up with the head at least once."""

    def lag_seconds(self) -> float | None:
        if self.event_time is None:
            return None
        try:
            moment = datetime.fromisoformat(self.event_time.replace("Z", "+00:00"))
        except ValueError:
            return None
        return max(0.0, time.time() - moment.astimezone(UTC).timestamp())

    def lag_seqs(self) -> int | None:
        if self.head is None or self.seq is None:
            return None
        return max(0, self.head - self.seq)

    def snapshot(self, rss: int | None = None) -> dict:
        data = {k: v for k, v in asdict(self).items() if not k.startswith("_")}
        elapsed = max(time.time() - self.started, 1e-6)
        data.update(
            elapsed_s=round(elapsed, 3),
            events_per_s=round(self.received / elapsed, 1),
            lag_s=_round(self.lag_seconds()),
            lag_seqs=self.lag_seqs(),
            rss_bytes=rss,
        )
        return data


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)

"""A stream's status, read from its directory (also while it runs): what `skyfill status
STREAM_ID` shows."""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from skyfill.errors import UsageError
from skyfill.firehose.run import StreamDir, source_key
from skyfill.firehose.shards import shard_source
from skyfill.firehose.state import StreamState
from skyfill.storage.lockfile import is_held


def stream_ids(workdir: Path) -> list[str]:
    root = workdir / "streams"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.sqlite").exists())


def stream_status(workdir: Path, stream_id: str) -> dict[str, Any]:
    """A stream's facts; a split stream's (`--shards`) gathered from its shards' states:
    their repos added up, its cursor the oldest of theirs (where a restart resumes)."""
    where = StreamDir.of(workdir, stream_id)
    if not where.state.exists():
        raise UsageError(f"no stream {stream_id} in {workdir}")
    manifest = orjson.loads(where.manifest.read_bytes()) if where.manifest.exists() else {}
    state = StreamState(where.state)
    try:
        stats = state.meta("stats")
        stats = stats if isinstance(stats, dict) else {}
        shards = state.meta("shards")
        host = manifest.get("from_host")
        source = stats.get("source") or (source_key(host) if isinstance(host, str) else None)
        if isinstance(shards, int) and shards > 1:
            counts, reasons, cursor = _shards_facts(where, shards, source)
        else:
            counts, reasons = state.counts(), state.reasons()
            cursor = state.cursor(source) if isinstance(source, str) else None
    finally:
        state.close()
    updated = stats.get("updated_at")
    return {
        "stream_id": stream_id,
        "from_host": manifest.get("from_host"),
        "sink": manifest.get("sink"),
        "running": is_held(where.lock),
        "cursor": cursor[0] if cursor else None,
        "cursor_time": cursor[1] if cursor else None,
        "updated_s_ago": None if updated is None else round(time.time() - updated, 1),
        "repos": counts,
        "why_not_active": reasons,
        "last_run": {k: v for k, v in stats.items() if k != "updated_at"},
    }


def _shards_facts(
    where: StreamDir, shards: int, source: object
) -> tuple[dict[str, int], dict[str, int], tuple[int, str | None] | None]:
    counts: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    cursors: list[tuple[int, str | None] | None] = []
    for index in range(shards):
        path = where.shard(index).state
        if not path.exists():
            cursors.append(None)
            continue
        state = StreamState(path)
        try:
            counts.update(state.counts())
            reasons.update(state.reasons())
            key = shard_source(source, index, shards) if isinstance(source, str) else None
            cursors.append(state.cursor(key) if key else None)
        finally:
            state.close()
    known = [c for c in cursors if c is not None]
    cursor = min(known) if known and len(known) == len(cursors) else None
    return dict(counts), dict(reasons.most_common(10)), cursor


def render_stream_status(facts: dict[str, Any]) -> str:
    run = facts["last_run"]
    repos = facts["repos"]
    statuses = ", ".join(
        f"{k.split(':', 1)[1]} {v}" for k, v in sorted(repos.items()) if k.startswith("status:")
    )
    saved = f"saved {facts['updated_s_ago']} s ago"
    lines = [
        f"stream {facts['stream_id']}: {'running' if facts['running'] else 'stopped'}",
        f"  from   {facts['from_host']}",
        f"  sink   {facts['sink']}",
        f"  cursor {facts['cursor']} ({facts['cursor_time']}), {saved}",
        f"  events received {run.get('received', 0)}, applied {run.get('applied', 0)}, "
        f"skipped {run.get('skipped', 0)}, malformed {run.get('malformed', 0)} (this run)",
        f"  rate {run.get('events_per_s', 0)} events/s, lag {run.get('lag_s')} s / "
        f"{run.get('lag_seqs')} seqs, memory {(run.get('rss_bytes') or 0) / 2**20:.0f} MiB",
        f"  repos  {statuses}",
        f"  desynchronized {repos.get('phase:desynchronized', 0)} "
        f"(resynced {run.get('resynced', 0)} this run)",
    ]
    for reason, count in facts.get("why_not_active", {}).items():
        lines.append(f"    {count:>6}  {reason}")
    return "\n".join(lines)

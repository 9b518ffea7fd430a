"""A stream's status, read from its directory (also while it runs): what `skyfill status
STREAM_ID` shows."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from skyfill.errors import UsageError
from skyfill.firehose.run import StreamDir
from skyfill.firehose.state import StreamState
from skyfill.storage.lockfile import is_held


def stream_ids(workdir: Path) -> list[str]:
    root = workdir / "streams"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "state.sqlite").exists())


def stream_status(workdir: Path, stream_id: str) -> dict[str, Any]:
    where = StreamDir.of(workdir, stream_id)
    if not where.state.exists():
        raise UsageError(f"no stream {stream_id} in {workdir}")
    manifest = orjson.loads(where.manifest.read_bytes()) if where.manifest.exists() else {}
    state = StreamState(where.state)
    try:
        stats = state.meta("stats")
        stats = stats if isinstance(stats, dict) else {}
        counts = state.counts()
        reasons = state.reasons()
        source = stats.get("source")
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

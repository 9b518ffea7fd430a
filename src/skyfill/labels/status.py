"""A label stream's status, read from its directory (also while it runs): what `skyfill
status STREAM_ID` shows for a `skyfill labels` stream."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson

from skyfill.errors import UsageError
from skyfill.labels.run import LabelsDir
from skyfill.labels.state import LabelState
from skyfill.storage.lockfile import is_held


def label_stream_ids(workdir: Path) -> list[str]:
    root = workdir / "streams"
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / "labels.json").exists())


def labels_status(workdir: Path, stream_id: str) -> dict[str, Any]:
    where = LabelsDir.of(workdir, stream_id)
    if not where.state.exists():
        raise UsageError(f"no label stream {stream_id} in {workdir}")
    manifest = orjson.loads(where.manifest.read_bytes()) if where.manifest.exists() else {}
    state = LabelState(where.state)
    try:
        stats = state.meta("stats")
        stats = stats if isinstance(stats, dict) else {}
        cursors = state.cursors()
        dids = {url: state.did(url) for url in manifest.get("labelers", [])}
    finally:
        state.close()
    updated = stats.get("updated_at")
    return {
        "stream_id": stream_id,
        "kind": "labels",
        "sink": manifest.get("sink"),
        "running": is_held(where.lock),
        "updated_s_ago": None if updated is None else round(time.time() - updated, 1),
        "labelers": [
            {"labeler": url, "did": did, "cursor": cursors.get(url)} for url, did in dids.items()
        ],
        "last_run": {k: v for k, v in stats.items() if k != "updated_at"},
    }


def render_labels_status(facts: dict[str, Any]) -> str:
    run = facts["last_run"]
    lines = [
        f"label stream {facts['stream_id']}: {'running' if facts['running'] else 'stopped'}",
        f"  sink   {facts['sink']} (saved {facts['updated_s_ago']} s ago)",
        f"  labels received {run.get('labels_received', 0)}, applied "
        f"{run.get('labels_applied', 0)}, refused {run.get('labels_refused', 0)}, malformed "
        f"frames {run.get('malformed', 0)} (last run)",
    ]
    for each in facts["labelers"]:
        lines.append(f"  {each['labeler']} ({each['did'] or 'DID not known yet'}): "
                     f"cursor {each['cursor']}")  # fmt: skip
    return "\n".join(lines)

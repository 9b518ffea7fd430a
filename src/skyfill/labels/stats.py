"""What a label stream has done, per labeler and in all: for the progress lines, the
summary and `skyfill status`."""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

TOTALS = ("frames", "labels_received", "labels_applied", "labels_refused", "malformed",
          "skipped", "reconnects")  # fmt: skip


@dataclass(slots=True)
class LabelCounters:
    labeler: str
    """The labeler's URL."""
    did: str | None = None
    """The labeler's DID (learnt from its first label, or from an earlier run)."""
    frames: int = 0
    """Frames read (labels, infos, errors, malformed ones)."""
    labels_received: int = 0
    labels_applied: int = 0
    """Labels written to the sink (in a batch that committed)."""
    labels_refused: int = 0
    """Labels not written: a bad or missing signature, a src that is not the labeler's
    DID, a label that breaks the Lexicon (each logged with its seq)."""
    malformed: int = 0
    """Frames that could not be read (logged with their seq when it could be read)."""
    skipped: int = 0
    """Frames of a type a label stream does not carry."""
    reconnects: int = 0
    key_refreshes: int = 0
    """Times the labeler's DID was resolved again after a signature failed."""
    seq: int | None = None
    """The last seq read."""
    cursor: int | None = None
    """The last seq saved (with the labels it covers)."""
    head: int | None = None
    """The labeler's head seq, as last probed (or the last seq read, if newer)."""
    live: bool = False
    """Caught up with the head (with --until-live)."""
    started: float = field(default_factory=time.time)

    def snapshot(self) -> dict[str, Any]:
        data = asdict(self)
        del data["started"]
        elapsed = max(time.time() - self.started, 1e-6)
        data["labels_per_s"] = round(self.labels_received / elapsed, 1)
        return data


def facts(counters: Iterable[LabelCounters], **extra: Any) -> dict[str, Any]:
    """The totals over every labeler, and each labeler's own numbers."""
    each = [c.snapshot() for c in counters]
    data: dict[str, Any] = {name: sum(c[name] for c in each) for name in TOTALS}
    data["live"] = bool(each) and all(c["live"] for c in each)
    data["labelers"] = each
    data.update(extra)
    return data


def summary_line(data: dict[str, Any]) -> str:
    cursors = ", ".join(f"{c['labeler']} cursor {c['cursor']}" for c in data["labelers"])
    return (
        f"{data['labels_received']} labels received ({data['labels_applied']} applied, "
        f"{data['labels_refused']} refused), {data['malformed']} malformed frames; {cursors}"
    )

"""The label seam: the rows a label stream writes, and the sinks that keep them.

A label follower hands a `LabelSink` its verified labels in batches, each with the
labeler's cursor it covers (the labeler's URL is the cursor's key). The SQL sinks keep
one row per (src, uri, cid, val), as Ozone does: a label replaces the row of its key
when its seq is not older (so a replayed batch changes nothing), and a negation
(`neg` true) replaces it too, staying as the row that says "taken back" (it is never
current). `labels_current` leaves out negations and labels whose `exp` has passed. The
Parquet log appends every row, and `labels_compact.py` folds it by the same rule.
A sink knows rows, not AT Protocol: the follower has checked every signature.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

LABEL_COLUMNS = ("src", "uri", "cid", "val", "neg", "cts", "exp", "sig", "ver", "seq")


@dataclass(frozen=True, slots=True)
class LabelRow:
    """One label as signed (`cts`, `exp` as the labeler wrote them), and its seq."""

    seq: int
    src: str
    uri: str
    cid: str | None
    val: str
    neg: bool
    cts: str
    exp: str | None
    sig: bytes
    ver: int | None = None
    idx: int = 0
    """The label's place in its frame (a frame may carry several labels)."""

    def values(self) -> tuple:
        """The row in LABEL_COLUMNS order."""
        return (self.src, self.uri, self.cid, self.val, self.neg, self.cts, self.exp,
                self.sig, self.ver, self.seq)  # fmt: skip


@dataclass(slots=True)
class LabelBatch:
    labeler: str
    """The labeler's URL: the cursor's key."""
    cursor: int
    """The seq up to which (inclusive) the labeler's stream is covered by this batch."""
    rows: Sequence[LabelRow] = field(default_factory=list)
    """In seq order."""


class LabelSink(Protocol):
    kind: str
    """`parquet`, `sqlite` or `postgresql`."""
    target: str
    """Where it writes, for people (a path, or a URL without its password)."""

    def check(self) -> None:
        """Raise SinkUnavailable if the sink cannot be written (cheap)."""
        ...

    def cursor(self, labeler: str) -> int | None:
        """The cursor last applied for `labeler`, or None."""
        ...

    def apply(self, batch: LabelBatch) -> int:
        """Write the batch and its cursor, all or nothing (idempotent); returns the rows
        written. Safe to call from several threads (one batch at a time)."""
        ...

    def close(self) -> None: ...

    def facts(self) -> dict[str, Any]:
        """What the sink holds, for summaries."""
        ...

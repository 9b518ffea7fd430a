"""Where a stream starts: the first event inside a time window, found by probing the
stream itself (the head and the probe are `atproto/stream/probe.py`'s).

Seqs only grow and so do event times, so after the head a binary search over cursors
finds the first event at or after a time in ~log2(head) short connections.
"""

from __future__ import annotations

from datetime import UTC, datetime

from skyfill.atproto.stream.probe import Opener, Probe, find_head, head_from, probe_with

__all__ = [
    "Opener",
    "Probe",
    "event_time",
    "find_head",
    "first_at_or_after",
    "head_from",
    "probe_with",
]


async def first_at_or_after(probe: Opener, when: datetime, head: int) -> tuple[int, Probe]:
    """The cursor to open at so that the first event is the first at or after `when`, and
    the probe at the host's oldest kept event (its time says whether the window is
    covered). `f(c)`, the time of the first event after cursor `c`, only grows with `c`:
    the answer is the smallest `c` with `f(c) >= when`."""
    oldest = await probe(0)
    if oldest.seq is None or not _before(oldest, when):
        return 0, oldest
    low, high = 0, head  # f(low) < when; f(high) >= when (at the head: nothing comes)
    while high - low > 1:
        middle = (low + high) // 2
        if _before(await probe(middle), when):
            low = middle
        else:
            high = middle
    return high, oldest


def event_time(probe: Probe) -> datetime | None:
    if probe.time is None:
        return None
    try:
        moment = datetime.fromisoformat(probe.time.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _before(probe: Probe, when: datetime) -> bool:
    """Whether the probed event is before `when` (an event without a readable time is
    taken as inside the window: starting earlier loses nothing)."""
    moment = event_time(probe)
    return probe.seq is not None and moment is not None and moment < when

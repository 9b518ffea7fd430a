"""Finding where a stream starts by probing it: the head, and the first event of a window,
over a host whose events have seq gaps and a window it no longer keeps."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from skyfill.firehose.window import Probe, find_head, first_at_or_after, head_from

T0 = datetime(2026, 11, 1, tzinfo=UTC)


class Host:
    """A stream's cursor rules (those of the reference PDS): after `cursor`, the next kept
    event; at the head, silence; above it, FutureCursor."""

    def __init__(self, seqs: list[int], oldest_kept: int = 0) -> None:
        self.events = [(s, T0 + timedelta(seconds=10 * s)) for s in seqs if s >= oldest_kept]
        self.head = seqs[-1] if seqs else 0
        self.probes = 0

    async def probe(self, cursor: int) -> Probe:
        self.probes += 1
        if cursor > self.head:
            return Probe(cursor, future=True)
        after = [(s, t) for s, t in self.events if s > cursor]
        if not after:
            return Probe(cursor)
        seq, when = after[0]
        return Probe(cursor, seq, when.isoformat().replace("+00:00", "Z"))


@pytest.mark.parametrize(
    "seqs",
    [[], [1], [1, 2, 3], list(range(1, 1001)), [1, 2, 5, 9, 10, 200, 201, 4097], [7]],
)
def test_find_head_is_the_newest_seq(seqs: list[int]) -> None:
    host = Host(seqs)
    assert asyncio.run(find_head(host.probe)) == (seqs[-1] if seqs else 0)
    assert host.probes <= 4 * (len(seqs) + 1).bit_length() + 8


@pytest.mark.parametrize(("seqs", "known"), [([1, 2, 3], 3), ([1, 2, 3], 2), ([5, 9], 5)])
def test_the_head_from_a_seq_already_read(seqs: list[int], known: int) -> None:
    host = Host(seqs)
    assert asyncio.run(head_from(host.probe, known)) == seqs[-1]
    if known == seqs[-1]:
        assert host.probes == 1  # at the head already: one FutureCursor says so


@pytest.mark.parametrize("target", [1, 2, 57, 500, 999, 1000])
def test_first_event_of_a_window(target: int) -> None:
    seqs = [s for s in range(1, 1001) if s % 7]  # gaps
    host = Host(seqs)
    when = T0 + timedelta(seconds=10 * target)
    cursor, _ = asyncio.run(first_at_or_after(host.probe, when, seqs[-1]))
    first = asyncio.run(host.probe(cursor))
    expected = min(s for s in seqs if s >= target)
    assert first.seq == expected


def test_window_older_than_the_host_keeps_starts_at_its_oldest_event() -> None:
    host = Host(list(range(1, 101)), oldest_kept=40)
    cursor, oldest = asyncio.run(first_at_or_after(host.probe, T0, 100))
    assert cursor == 0
    assert oldest.seq == 40  # the caller reports seqs 1..39 as missing


def test_window_after_the_head_starts_at_the_head() -> None:
    host = Host(list(range(1, 51)))
    cursor, _ = asyncio.run(first_at_or_after(host.probe, T0 + timedelta(days=1), 50))
    assert cursor == 50

"""A stream's head, found by probing the stream itself.

A host's stream (`subscribeRepos`, `subscribeLabels`: the same cursor rules) can be
opened at any cursor: above the head it answers `FutureCursor`; at the head it is
silent; below it, it sends the next event at once (or `#info OutdatedCursor` and then
its oldest kept event). Seqs only grow, so a binary search over cursors finds the head
in ~2·log2(head) short connections. `firehose/window.py` finds a time window's first
event the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from skyfill.atproto.stream.frames import (
    ErrorFrame,
    FrameError,
    InfoFrame,
    UnknownFrame,
    decode_frame,
)

SILENCE_SECONDS = 1.0
"""A host at its head sends nothing: after this long without a frame, the cursor is it."""
PROBE_CLOSE_SECONDS = 0.0
"""A probe reads one frame and hangs up: the events the host sends meanwhile are not
read (closing reads them until the host's close frame, or this long)."""


@dataclass(frozen=True, slots=True)
class Probe:
    """What the stream sends first when opened after `cursor`."""

    cursor: int
    seq: int | None = None
    """The first event's seq (None: nothing came, or an error)."""
    time: str | None = None
    future: bool = False
    """The host answered FutureCursor: `cursor` is above its head."""
    outdated: bool = False
    """The host said OutdatedCursor: `cursor` is older than it keeps."""


Opener = Callable[[int], Awaitable[Probe]]


def probe_with(subscribe: Callable, url: str, **client: object) -> Opener:
    """A probe over the websocket client: open at a cursor, read the first frame, close.
    An event of a type `decode_frame` does not know (a `#labels`) is read for its seq."""

    async def probe(cursor: int) -> Probe:
        outdated = False
        stream = subscribe(url, cursor, close_timeout=PROBE_CLOSE_SECONDS, **client)
        try:
            async with asyncio.timeout(SILENCE_SECONDS):
                async for message in stream:
                    try:
                        frame = decode_frame(message)
                    except FrameError as exc:
                        if exc.seq is not None:
                            return Probe(cursor, exc.seq, None, outdated=outdated)
                        continue
                    if isinstance(frame, ErrorFrame):
                        return Probe(cursor, future=frame.error == "FutureCursor")
                    if isinstance(frame, InfoFrame):
                        outdated = outdated or frame.name == "OutdatedCursor"
                        continue
                    if isinstance(frame, UnknownFrame):
                        if frame.seq is not None:
                            return Probe(cursor, frame.seq, None, outdated=outdated)
                        continue
                    return Probe(cursor, frame.seq, frame.time, outdated=outdated)
        except TimeoutError:
            pass
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()
        return Probe(cursor, outdated=outdated)

    return probe


async def find_head(probe: Opener) -> int:
    """The seq of the host's newest event (0 when it has none)."""
    low, high = 0, 1  # head >= low; `high` grows until it is above the head
    while True:
        p = await probe(high)
        if p.future:
            break
        if p.seq is None:  # silent: high is the head
            return high
        low = max(low, p.seq)
        high = max(high * 4, p.seq + 1)
    # invariant: head >= low, head < high
    while high - low > 1:
        middle = (low + high) // 2
        p = await probe(middle)
        if p.future:
            high = middle
        elif p.seq is None:
            return middle
        else:
            low = max(low, p.seq)
    return low


async def head_from(probe: Opener, seq: int) -> int:
    """The head, known to be at `seq` or past it: one probe after `seq` says whether it is
    `seq` (the host answers FutureCursor at once), else the search of `find_head`."""
    if (await probe(seq + 1)).future:
        return seq
    return await find_head(probe)

"""The cyclic garbage collector's settings for the long-running data paths.

The hot loops (a repo's records, a stream's events) allocate many short-lived objects that
hold no cycles, which reference counting frees on its own. With CPython's defaults the
collector still runs every 700 allocations, and its passes over the older generations walk
every object alive: the modules and classes loaded at start-up, the queued chunks, the
batch being built. On the stream consumer that was about 15% of its process's CPU
(docs/BENCHMARKS.md §23).

`tune()` moves what exists when it is called out of the collector's reach (`gc.freeze`)
and lets the young generation grow to `YOUNG_OBJECTS` before a pass; the older
generations keep their ratios. Cycles are still collected, only less often.
"""

from __future__ import annotations

import gc

YOUNG_OBJECTS = 50_000
"""Allocations (net of frees) between two passes over the young generation (default 700)."""


def tune() -> None:
    """Call once a process has loaded what it runs with, before its hot loop."""
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_OBJECTS, middle, old)

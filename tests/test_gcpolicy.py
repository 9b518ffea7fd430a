"""gcpolicy.tune: the start-up objects leave the collector's reach, the young generation
grows, and cycles made afterwards are still collected."""

from __future__ import annotations

import gc
import weakref

from skyfill import gcpolicy


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_tune_freezes_what_exists_and_still_collects_cycles() -> None:
    before = gc.get_threshold()
    try:
        gcpolicy.tune()
        assert gc.get_freeze_count() > 1000  # the modules and classes loaded so far
        assert gc.get_threshold() == (gcpolicy.YOUNG_OBJECTS, before[1], before[2])
        a, b = _Node(), _Node()
        a.other, b.other = b, a
        gone = weakref.ref(a)
        del a, b
        assert gone() is not None  # a cycle: reference counting alone keeps it
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)

"""Filling a frozen dataclass with slots without its `__init__`, for the decode hot paths.

A frozen dataclass's `__init__` sets each field with `object.__setattr__`: for a commit
frame, about a sixth of `decode_frame`'s time; calling the slots' own setters costs about
a third of that. A fast path makes the instance with `object.__new__(cls)` and sets every
field with the setters `setters` returns, in the order of the names it was given.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

Setter = Callable[[object, object], None]

new = object.__new__


def setters(cls: type, *names: str) -> tuple[Setter, ...]:
    """The slot setters of `cls`'s fields `names`, which must be all of its fields (so a
    field added later fails at import, never leaves a slot of a fast-path instance empty)."""
    fields = sorted(f.name for f in dataclasses.fields(cls))
    if sorted(names) != fields or not hasattr(cls, "__slots__"):
        raise TypeError(f"{names} are not the slotted fields {fields} of {cls.__name__}")
    return tuple(getattr(cls, name).__set__ for name in names)

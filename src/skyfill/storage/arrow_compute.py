"""The `pyarrow.compute` functions skyfill calls, under names a type checker can see.

pyarrow makes most of `pyarrow.compute` when it is imported, one wrapper per kernel of
Arrow's C++ function registry (`_make_global_functions`), and ships no type stubs: a static
checker finds no `pc.not_equal` on the module. This module binds each kernel skyfill uses
once, from the module's namespace, with its shape; modules import it as
`from skyfill.storage import arrow_compute as pc` and call `pc.not_equal(...)` as before
(the same function objects). Functions pyarrow writes in Python (`fill_null`) are
re-exported as they are. pyarrow's array types are opaque to the checker either way.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import pyarrow.compute as _pc

Datum = Any
"""A pyarrow Array, ChunkedArray, Scalar, RecordBatch or Table (no stubs: not checkable)."""

_kernels: Mapping[str, Any] = vars(_pc)

# Element-wise, two inputs (arrays, chunked arrays or scalars) of one length.
and_: Callable[[Datum, Datum], Datum] = _kernels["and_"]
and_not: Callable[[Datum, Datum], Datum] = _kernels["and_not"]
or_: Callable[[Datum, Datum], Datum] = _kernels["or_"]
equal: Callable[[Datum, Datum], Datum] = _kernels["equal"]
greater: Callable[[Datum, Datum], Datum] = _kernels["greater"]
not_equal: Callable[[Datum, Datum], Datum] = _kernels["not_equal"]

# One input.
all: Callable[[Datum], Datum] = _kernels["all"]  # pyarrow's name (shadows the builtin here)
count_distinct: Callable[[Datum], Datum] = _kernels["count_distinct"]
indices_nonzero: Callable[[Datum], Datum] = _kernels["indices_nonzero"]
is_null: Callable[[Datum], Datum] = _kernels["is_null"]
min_max: Callable[[Datum], Datum] = _kernels["min_max"]
take: Callable[[Datum, Datum], Datum] = _kernels["take"]
unique: Callable[[Datum], Datum] = _kernels["unique"]
value_counts: Callable[[Datum], Datum] = _kernels["value_counts"]

# With options: `is_in(values, value_set=...)`, `replace_substring(strings, pattern,
# replacement)`, `sort_indices(table, sort_keys=...)`, `strftime(timestamps, format)`.
is_in: Callable[..., Datum] = _kernels["is_in"]
replace_with_mask: Callable[[Datum, Datum, Datum], Datum] = _kernels["replace_with_mask"]
replace_substring: Callable[..., Datum] = _kernels["replace_substring"]
sort_indices: Callable[..., Datum] = _kernels["sort_indices"]
strftime: Callable[..., Datum] = _kernels["strftime"]

fill_null = _pc.fill_null

__all__ = [
    "Datum",
    "all",
    "and_",
    "and_not",
    "count_distinct",
    "equal",
    "fill_null",
    "greater",
    "indices_nonzero",
    "is_in",
    "is_null",
    "min_max",
    "not_equal",
    "or_",
    "replace_substring",
    "replace_with_mask",
    "sort_indices",
    "strftime",
    "take",
    "unique",
    "value_counts",
]

"""Streaming k-way merge of sorted Parquet files, de-duplicated on a key.

Every input is sorted by `MergeSpec.order_columns` (the key columns, `group_by` first)
and holds one row per key (`sort_table` makes it so). `merge_stream` merges any number
of such files into one sorted, de-duplicated stream, holding only a bounded slice of each
input in memory.
Among rows with equal keys the one with the greatest `newest_column` wins, and on a tie
the row from the earliest input (in the order given), so the result equals `sort_table`
of the inputs' concatenation. (`merge_levels.reduce_to_fan_in` merges groups of inputs,
level after level, into files on disk until at most `fan_in` remain.)

The merge is a "frontier" merge: the frontier is the smallest last key among the
buffered batches of inputs that still have unread rows. Every row at or below it is
known to be final, so the buffers' prefixes up to it (found by binary search) are taken,
concatenated, sorted and de-duplicated by Arrow, and emitted; the buffer that defined
the frontier is used up and refilled. Keys are compared column by column in Arrow's sort
order (strings and binaries bytewise, nulls after every value), so keys may be of any
sortable type, strings holding NUL bytes included; float keys holding NaN are not
supported. The merge runs in a background thread, a couple of batches ahead of the
consumer, so that merging and the consumer's encoding use two cores.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.storage import arrow_compute as pc
from skyfill.storage.prefetch import ahead

PREFETCH_BATCHES = 2
"""Merged batches made ahead of the consumer, in a background thread."""
MIN_READ_ROWS = 4096
"""Rows per batch read from each input of a merge, at least (see `_read_batch_rows`)."""

Key = tuple[tuple[Any, ...], ...]
"""A row's key as Python values: one `(0, value)` or `(1,)` (null) per key column."""


class MergeOrderError(ValueError):
    """An input of a merge was not sorted and de-duplicated by the merge key."""


@dataclass(frozen=True, kw_only=True, slots=True)
class MergeSpec:
    key_columns: tuple[str, ...]
    """Columns that identify a row, e.g. ("did", "collection", "rkey")."""
    newest_column: str
    """Among rows with equal keys the greatest value here wins (strings compare bytewise)."""
    fan_in: int = 10
    """Files merged at once, and the most files `reduce_to_fan_in` leaves."""
    batch_rows: int = 65_536
    """Rows per merged batch, roughly (half to one and a half times it); a row group of a
    merged file holds one batch. A merge reads `batch_rows / inputs` rows per input at a
    time (at least MIN_READ_ROWS)."""
    in_memory_bytes: int = 0
    """Inputs up to this size in all (uncompressed) are merged in memory, by one sort
    (`merge_in_memory`: faster for a small job); 0: always streamed."""
    group_by: str | None = None
    """A key column that rows are ordered by first, in every sorted file and merge (a sink
    partitioned by it gets each partition's rows together); rows with one value of it
    come in the order of the other key columns."""
    workers: int = 2
    """Merges of one level that `reduce_to_fan_in` runs at once (threads: Arrow reads,
    sorts and writes without the GIL). Memory grows with it; 1 runs them one by one."""

    def __post_init__(self) -> None:
        if not self.key_columns:
            raise ValueError("MergeSpec.key_columns must name at least one column")
        if self.newest_column in self.key_columns:
            raise ValueError("MergeSpec.newest_column must not be a key column")
        if self.fan_in < 2:
            raise ValueError("MergeSpec.fan_in must be at least 2")
        if self.group_by is not None and self.group_by not in self.key_columns:
            raise ValueError("MergeSpec.group_by must be a key column")
        if self.workers < 1:
            raise ValueError("MergeSpec.workers must be at least 1")
        if self.batch_rows < 1:
            raise ValueError("MergeSpec.batch_rows must be positive")

    @property
    def order_columns(self) -> tuple[str, ...]:
        """The key columns in the order rows are sorted by: `group_by` first."""
        if self.group_by is None:
            return self.key_columns
        return (self.group_by, *(c for c in self.key_columns if c != self.group_by))

    @property
    def sort_keys(self) -> list[tuple[str, str, str]]:
        """Arrow sort keys: order columns ascending, newest first, nulls last everywhere."""
        keys = [(c, "ascending", "at_end") for c in self.order_columns]
        return [*keys, (self.newest_column, "descending", "at_end")]


# -- sorting and de-duplication ---------------------------------------------------------


def sort_table(table: pa.Table, spec: MergeSpec) -> pa.Table:
    """Sorted by order_columns ascending, newest_column descending, duplicates of a key
    removed.

    Of the rows sharing a key the one with the greatest newest_column is kept (nulls lose
    to every value); on a tie, the first in the table's order. Nulls in key columns sort
    after every value and equal each other.
    """
    if table.num_rows == 0:
        return table
    return table.take(_unique_sorted_indices(table, spec))


def sort_table_by_group(table: pa.Table, spec: MergeSpec) -> pa.Table:
    """`sort_table` for rows that are in order but for `group_by` (e.g. one key after
    another, each key's rows in the order of the other columns): a stable sort by
    `group_by` alone, kept if it leaves the rows sorted and unique (checked), else the
    full sort. The same rows in the same order either way, the first often at half the
    cost."""
    if spec.group_by is None or table.num_rows < 2:
        return sort_table(table, spec)
    grouped = table.take(pc.sort_indices(table, sort_keys=[(spec.group_by, "ascending", "at_end")]))
    if _strictly_ascending(grouped, spec.order_columns):
        return grouped
    return sort_table(table, spec)


def _unique_sorted_indices(table: pa.Table, spec: MergeSpec) -> pa.Array:
    """Indices of the rows `sort_table` keeps, in its order (the sort is stable)."""
    indices = pc.sort_indices(table, sort_keys=spec.sort_keys)
    first = _first_of_each_key(table.select(list(spec.order_columns)).take(indices))
    return indices if first is None else indices.filter(first)


def _first_of_each_key(keys: pa.Table) -> pa.ChunkedArray | None:
    """Mask of the rows whose key differs from the previous row's; None if all do."""
    n = keys.num_rows
    if n < 2:
        return None
    differs = None
    for column in keys.columns:
        changed = _not_equal(column.slice(1), column.slice(0, n - 1))
        differs = changed if differs is None else pc.or_(differs, changed)
    assert differs is not None
    if pc.all(differs).as_py():
        return None
    return pa.chunked_array([pa.array([True]), *differs.chunks], pa.bool_())


def _not_equal(a: pa.ChunkedArray, b: pa.ChunkedArray) -> pa.ChunkedArray:
    """Element-wise `a != b` where null equals null and differs from every value."""
    if a.null_count == 0 and b.null_count == 0:
        return pc.not_equal(a, b)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return pc.and_not(pc.fill_null(pc.not_equal(a, b), True), both_null)


# -- keys as Python values (for the frontier) -------------------------------------------


def _comparable(array: pa.Array) -> pa.Array:
    """The array with temporal types viewed as their integers (exact, and ordered alike)."""
    kind = array.type
    if pa.types.is_temporal(kind) and not pa.types.is_interval(kind):
        return array.view(pa.int32() if kind.bit_width == 32 else pa.int64())
    return array


class _Keys(Sequence[Key]):
    """The key of each row of a batch, computed only for the rows that are looked at."""

    def __init__(self, batch: pa.RecordBatch, columns: tuple[str, ...]) -> None:
        self._arrays = [_comparable(batch.column(name)) for name in columns]
        self._rows = batch.num_rows

    def __len__(self) -> int:
        return self._rows

    def __getitem__(self, i: int) -> Key:  # type: ignore[override]
        values = (array[i].as_py() for array in self._arrays)
        return tuple((1,) if v is None else (0, v) for v in values)


# -- the k-way merge ---------------------------------------------------------------------


class _Input:
    """One input file: its reader and the not yet merged rest of its current batch.

    Each input is read in batches of about `batch_rows / inputs` rows, so a frontier step
    sorts about one batch whatever the number of inputs (and large allocations, slow to
    get from the operating system again and again, are avoided).
    """

    def __init__(
        self, path: Path, schema: pa.Schema, order_columns: tuple[str, ...], rows: int
    ) -> None:
        self.file = pq.ParquetFile(path)
        self.unread = self.file.metadata.num_rows
        self.batches = _batches(self.file, rows, schema.names)
        self.schema = schema
        self.order_columns = order_columns
        self.buffer = pa.record_batch([], schema=pa.schema([]))
        self.keys: _Keys | None = None

    @property
    def rows(self) -> int:
        return self.buffer.num_rows

    @property
    def more(self) -> bool:
        """Whether rows follow the buffer (so its last key bounds what is final)."""
        return self.unread > 0

    def fill(self) -> None:
        """Read the next non-empty batch once the buffer is used up."""
        while not self.buffer.num_rows and self.unread > 0:
            try:
                batch = next(self.batches)
            except StopIteration:
                self.unread = 0
                break
            self.unread -= batch.num_rows
            if not batch.schema.equals(self.schema):
                batch = batch.select(self.schema.names).cast(self.schema)
            self.buffer = batch
            self.keys = None

    def last_key(self) -> Key:
        return self._keys()[self.rows - 1]

    def _keys(self) -> _Keys:
        if self.keys is None:
            self.keys = _Keys(self.buffer, self.order_columns)
        return self.keys

    def take_through(self, frontier: Key | None) -> pa.RecordBatch | None:
        """Remove and return the buffered rows whose key is <= frontier (None: all)."""
        if not self.rows:
            return None
        n = self.rows if frontier is None else bisect.bisect_right(self._keys(), frontier)
        if n == 0:
            return None
        head, self.buffer = self.buffer.slice(0, n), self.buffer.slice(n)
        self.keys = None
        return head

    def close(self) -> None:
        self.file.close()


def _batches(file: pq.ParquetFile, rows: int, columns: list[str]) -> Iterator[pa.RecordBatch]:
    """The file's batches, one row group at a time.

    A reader over all row groups at once pre-buffers all of them (the whole file), so
    memory would grow with the input; one reader per row group holds only that one.
    """
    for group in range(file.metadata.num_row_groups):
        yield from file.iter_batches(batch_size=rows, row_groups=[group], columns=columns)


def merge_stream(inputs: list[Path], spec: MergeSpec, schema: pa.Schema) -> pa.RecordBatchReader:
    """k-way streaming merge of Parquet files, each already sorted+deduplicated by spec.

    Yields sorted, deduplicated batches of `batch_rows / 2` to `1.5 * batch_rows` rows (the
    last may be shorter) across all inputs; newest kept on duplicate keys. Memory is bounded by
    the inputs' read buffers (each about `batch_rows / len(inputs)` rows, plus what the
    Parquet reader holds of its current row group) and a few batches, never by the total
    rows. Inputs may be empty files. Raises MergeOrderError when it finds an input that is
    not sorted and de-duplicated.
    """
    batches = ahead(_merged_batches(inputs, spec, schema), PREFETCH_BATCHES, "skyfill-merge")
    return pa.RecordBatchReader.from_batches(schema, batches)


@dataclass(frozen=True, slots=True)
class InMemoryMerge:
    """What `merge_in_memory` gives: the rows, and how they were put in order."""

    rows: pa.RecordBatchReader
    concatenated: bool
    """True: the inputs needed no sort and were only concatenated (`_in_order`)."""


def merge_in_memory(inputs: list[Path], spec: MergeSpec, schema: pa.Schema) -> InMemoryMerge:
    """The rows `merge_stream` gives (the same row kept of duplicate keys, in the same
    order), in batches of `batch_rows`, for inputs small enough to hold at once: read whole
    and sorted once by Arrow instead of merged step by step; or, when the inputs need no
    sort (`_in_order`), only concatenated."""
    with ThreadPoolExecutor(spec.workers, "skyfill-read") as pool:
        tables = list(pool.map(lambda path: _read_whole(path, schema), inputs))
    ordered = _in_order(tables, spec)
    if ordered is not None:
        del tables
        batches = _windows(ordered, spec.batch_rows)
    else:
        table = pa.concat_tables(tables).combine_chunks() if tables else schema.empty_table()
        del tables
        order = _unique_sorted_indices(table, spec) if table.num_rows else pa.array([], pa.int64())
        batches = _taken(table, order, spec.batch_rows)
    # Each batch is made in a thread, ahead of the consumer (who encodes the last one).
    ready = ahead(batches, PREFETCH_BATCHES, "skyfill-merge")
    return InMemoryMerge(pa.RecordBatchReader.from_batches(schema, ready), ordered is not None)


def _read_whole(path: Path, schema: pa.Schema) -> pa.Table:
    return pq.read_table(path, columns=schema.names, schema=schema)


def _taken(table: pa.Table, order: pa.Array, rows: int) -> Iterator[pa.RecordBatch]:
    for start in range(0, len(order), rows):
        yield from table.take(order.slice(start, rows)).to_batches()


def _windows(table: pa.Table, rows: int) -> Iterator[pa.RecordBatch]:
    """The table's rows in contiguous batches of `rows` (the last may be shorter): the
    batches `_taken` makes of the same rows, so that what is written of them is too."""
    for start in range(0, table.num_rows, rows):
        yield from table.slice(start, rows).combine_chunks().to_batches()


def _in_order(tables: list[pa.Table], spec: MergeSpec) -> pa.Table | None:
    """The inputs' rows in merge order, only concatenated, when no sort is needed; else None.

    No sort is needed when every input is sorted by the order columns with one row per key
    and the inputs' ranges of the first order column after `group_by` (the range column)
    do not overlap: no key is then in two inputs, and the inputs taken by their ranges, one
    `group_by` value after another, are in order. A job whose tasks cover ascending ranges
    of that column (a backfill of a sorted DID list) is aggregated so."""
    column = _range_column(spec)
    if column is None:
        return None
    ranges: list[tuple[Any, Any, pa.Table]] = []
    for table in tables:
        if not table.num_rows:
            continue
        bounds = _range(table, column, spec.order_columns)
        if bounds is None:
            return None
        ranges.append((*bounds, table))
    if not ranges:
        return None
    ranges.sort(key=lambda r: r[0])
    if any(not a[1] < b[0] for a, b in itertools.pairwise(ranges)):
        return None
    ordered = [table for _, _, table in ranges]
    if spec.group_by is None:
        return pa.concat_tables(ordered)
    parts: dict[Any, list[pa.Table]] = {}
    for table in ordered:
        for value, start, length in _runs(table.column(spec.group_by)):
            parts.setdefault(value, []).append(table.slice(start, length))
    return pa.concat_tables([part for value in sorted(parts) for part in parts[value]])


def _range_column(spec: MergeSpec) -> str | None:
    after_group = spec.order_columns[1:] if spec.group_by is not None else spec.order_columns
    return after_group[0] if after_group else None


def _range(table: pa.Table, column: str, order: tuple[str, ...]) -> tuple[Any, Any] | None:
    """The lowest and the highest value of `column` in a table sorted by `order` with one
    row per key (and no null in those columns); None for any other table."""
    if not _strictly_ascending(table, order):
        return None
    bounds = pc.min_max(table.column(column))
    return bounds["min"].as_py(), bounds["max"].as_py()


def _strictly_ascending(table: pa.Table, columns: tuple[str, ...]) -> bool:
    """Whether each row's values of `columns` come after the previous row's (compared
    column by column, as Arrow sorts); False if a null is among them."""
    n = table.num_rows
    if any(table.column(c).null_count for c in columns):
        return False
    if n < 2:
        return True
    after: pa.ChunkedArray | None = None
    for name in reversed(columns):  # row i+1 > row i: greater here, or equal and after
        values = table.column(name)
        later, earlier = values.slice(1), values.slice(0, n - 1)
        greater = pc.greater(later, earlier)
        after = (
            greater if after is None else pc.or_(greater, pc.and_(pc.equal(later, earlier), after))
        )
    assert after is not None
    return pc.all(after).as_py()


def _runs(values: pa.ChunkedArray) -> Iterator[tuple[Any, int, int]]:
    """(value, start, length) of each run of equal values."""
    n = len(values)
    if not n:
        return
    changes = pc.indices_nonzero(pc.not_equal(values.slice(1), values.slice(0, n - 1)))
    starts = [0, *(i + 1 for i in changes.to_pylist())]
    ends = [*starts[1:], n]
    firsts = pc.take(values, pa.array(starts)).to_pylist()
    for value, start, end in zip(firsts, starts, ends, strict=True):
        yield value, start, end - start


def fits_in_memory(inputs: list[Path], budget: int) -> bool:
    """Whether the inputs' data, as Arrow holds it (Parquet's uncompressed sizes), is at most
    `budget`; footers are read only until the sum passes it."""
    total = 0
    for path in inputs:
        meta = pq.ParquetFile(path).metadata
        total += sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups))
        if total > budget:
            return False
    return True


def _merged_batches(
    inputs: list[Path], spec: MergeSpec, schema: pa.Schema
) -> Iterator[pa.RecordBatch]:
    with contextlib.ExitStack() as stack:
        rows = _read_batch_rows(spec, len(inputs))
        states = []
        for path in inputs:
            state = _Input(Path(path), schema, spec.order_columns, rows)
            stack.callback(state.close)
            states.append(state)
        yield from _rebatch(_merged_tables(states, spec), spec.batch_rows)


def _read_batch_rows(spec: MergeSpec, inputs: int) -> int:
    """`batch_rows` shared among the inputs, but not so few that per-step costs dominate."""
    return max(min(MIN_READ_ROWS, spec.batch_rows), spec.batch_rows // max(1, inputs))


def _merged_tables(states: list[_Input], spec: MergeSpec) -> Iterator[pa.Table]:
    """Sorted, de-duplicated tables of at most `batch_rows` rows, each after the previous."""
    last: Key | None = None
    while True:
        for state in states:
            state.fill()
        live = [s for s in states if s.rows]
        if not live:
            return
        bounded = [s.last_key() for s in live if s.more]
        frontier = min(bounded) if bounded else None
        parts = [part for s in live if (part := s.take_through(frontier)) is not None]
        if not parts:  # the frontier's own input holds rows above its last key
            raise MergeOrderError(
                f"merge inputs are not sorted and de-duplicated by {list(spec.order_columns)}"
            )
        if len(parts) == 1:  # already sorted and unique
            table, indices = pa.Table.from_batches(parts), None
        else:  # one contiguous copy; gathering from many chunks is much slower
            table = pa.Table.from_batches(parts).combine_chunks()
            indices = _unique_sorted_indices(table, spec)
        del parts, live
        last = _check_order(last, table, indices, spec)
        if indices is None:
            yield table
            continue
        pieces = -(-len(indices) // spec.batch_rows)
        size = -(-len(indices) // pieces)  # equal pieces: no small one left over
        for start in range(0, len(indices), size):
            yield table.take(indices.slice(start, size))


def _check_order(
    last: Key | None, table: pa.Table, indices: pa.Array | None, spec: MergeSpec
) -> Key:
    """Each step's rows must all come after the previous step's (inputs sorted, unique)."""
    first_row, last_row = 0, table.num_rows - 1
    if indices is not None:
        first_row, last_row = indices[0].as_py(), indices[-1].as_py()
    first = _row_key(table, first_row, spec.order_columns)
    if last is not None and not last < first:
        raise MergeOrderError(
            f"merge inputs are not sorted and de-duplicated by {list(spec.order_columns)}: "
            f"key {first} follows {last}"
        )
    return _row_key(table, last_row, spec.order_columns)


def _row_key(table: pa.Table, row: int, columns: tuple[str, ...]) -> Key:
    batch = table.select(list(columns)).slice(row, 1).combine_chunks().to_batches()[0]
    return _Keys(batch, columns)[0]


def _rebatch(tables: Iterator[pa.Table], rows: int) -> Iterator[pa.RecordBatch]:
    """Record batches of `rows / 2` to `1.5 * rows` rows (the last may be shorter).

    The tables come with at most `rows` rows each, mostly more than half of it: those pass
    through without a copy; only smaller ones are joined.
    """
    pending: list[pa.Table] = []
    pending_rows = 0
    for table in tables:
        pending.append(table)
        pending_rows += table.num_rows
        if pending_rows >= rows // 2:
            yield _one_batch(pending)
            pending, pending_rows = [], 0
    if pending:
        yield _one_batch(pending)


def _one_batch(tables: list[pa.Table]) -> pa.RecordBatch:
    """The tables' rows as one contiguous batch (copied only if they are not already)."""
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table.combine_chunks().to_batches()[0]

"""How the engine writes Parquet: one set of options for segments, task files and merges.

Dictionary encoding only pays for columns with few distinct values; for a column of unique
strings (a JSON document per row) it makes every reader decode a page-sized dictionary per
column per open file, which dominates the memory of a k-way merge over many files. A job
type marks the columns worth a dictionary with `DICTIONARY` field metadata; a schema that
marks none keeps Arrow's default (all columns).
"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

COMPRESSION = "zstd"
DICTIONARY = {b"skyfill.dictionary": b"true"}
"""Field metadata: encode this column with a dictionary (few distinct values)."""


def dictionary_field(name: str, type_: pa.DataType, nullable: bool = True) -> pa.Field:
    return pa.field(name, type_, nullable=nullable, metadata=DICTIONARY)


def dictionary_columns(schema: pa.Schema) -> list[str] | bool:
    """Parquet's `use_dictionary`: the marked columns, or True (all) when none is marked.

    pyarrow documents that argument as "bool or list" but leaves it unannotated, so a type
    checker infers `bool` from its default; the two calls below ignore that one report."""
    marked = [f.name for f in schema if (f.metadata or {}).get(b"skyfill.dictionary") == b"true"]
    return marked or True


def writer(path: Path, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(
        path,
        schema,
        compression=COMPRESSION,
        use_dictionary=dictionary_columns(schema),  # pyright: ignore[reportArgumentType]
    )


def write_table(table: pa.Table, path: Path, row_group_size: int) -> None:
    pq.write_table(
        table,
        path,
        compression=COMPRESSION,
        row_group_size=row_group_size,
        use_dictionary=dictionary_columns(table.schema),  # pyright: ignore[reportArgumentType]
    )

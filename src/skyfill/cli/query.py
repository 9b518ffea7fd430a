"""`skyfill query JOB SQL`: DuckDB over a finished job's Parquet dataset, whose tables are
the views `records` and `repos`. DuckDB is an optional extra (`pip install 'skyfill[query]'`):
without it the command says so in one line."""

from __future__ import annotations

import csv
import sys
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from types import ModuleType
from typing import Any

import click
import orjson

from skyfill.backfill.output import TABLES, job_output, open_table
from skyfill.cli.options import workdir_option
from skyfill.errors import UsageError

FORMATS = ("table", "csv", "json")
CELL_WIDTH = 80
"""Longest cell of the `table` format (longer text ends in `…`); csv and json are whole."""


@click.command()
@click.argument("job")
@click.argument("sql")
@workdir_option
@click.option(
    "--format",
    "output_format",
    type=click.Choice(FORMATS),
    default="table",
    show_default=True,
    help="table: aligned columns (long cells cut); csv: with a header; json: one object a line.",
)
def query(job: str, sql: str, workdir: Path, output_format: str) -> None:
    """Run SQL (DuckDB) over a finished job's dataset: the views `records` and `repos`.
    JOB is a job id in the workdir, a job's directory or an output directory."""
    duckdb = _duckdb()
    output = job_output(job, workdir)
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")  # timestamps shown as stored
        for table in TABLES:
            connection.register(table, open_table(output, table))
        try:
            result = connection.sql(sql)
            columns, rows = (result.columns, result.fetchall()) if result is not None else ([], [])
        except duckdb.Error as exc:
            raise UsageError(f"query: {_first_line(exc)}") from None
    finally:
        connection.close()
    if columns:
        _print(output_format, columns, rows)


def _duckdb() -> ModuleType:
    try:
        import duckdb
    except ImportError:
        raise UsageError(
            "skyfill query needs DuckDB, which is not installed: pip install 'skyfill[query]'"
        ) from None
    return duckdb


def _first_line(exc: Exception) -> str:
    return next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)


def _print(output_format: str, columns: list[str], rows: list[tuple]) -> None:
    if output_format == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([["" if v is None else _text(v) for v in row] for row in rows])
    elif output_format == "json":
        for row in rows:
            line = orjson.dumps(dict(zip(columns, row, strict=True)), default=str)
            click.echo(line.decode())
    else:
        click.echo(render_table(columns, rows))


def render_table(columns: list[str], rows: list[tuple]) -> str:
    """Aligned columns under a header (numbers to the right), and the row count."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(c), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]
    numeric = [_numeric([r[i] for r in rows]) for i in range(len(columns))]

    def line(values: list[str]) -> str:
        return "  ".join(
            v.rjust(w) if right else v.ljust(w)
            for v, w, right in zip(values, widths, numeric, strict=True)
        ).rstrip()

    lines = [line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    lines.append(f"({len(rows)} row{'' if len(rows) == 1 else 's'})")
    return "\n".join(lines)


def _numeric(values: list[Any]) -> bool:
    """A column of numbers (and NULLs), aligned to the right."""
    present = [v for v in values if v is not None]
    return bool(present) and all(
        isinstance(v, int | float | Decimal) and not isinstance(v, bool) for v in present
    )


def _cell(value: Any) -> str:
    text = "NULL" if value is None else _text(value)
    text = text.replace("\n", " ")
    return text if len(text) <= CELL_WIDTH else text[: CELL_WIDTH - 1] + "…"


def _text(value: Any) -> str:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)

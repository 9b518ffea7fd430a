"""A label log (`labels_log.py`) folded into the labels in force: `labels.parquet` (one
row per (src, uri, cid, val): the latest label of each key, negations included, as the
SQL sinks' `labels` table) and `labels_current.parquet` (what the `labels_current` view
holds at the moment of the fold: no negations, no label whose `exp` has passed).

The fold follows the SQL sinks' rule: of a key's labels, the one with the highest (seq,
idx) wins; rows written twice by a replayed batch are dropped on (labeler, seq, idx).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.errors import UsageError
from skyfill.sinks.labels_log import LABEL_SCHEMA, label_parts
from skyfill.storage.atomic import commit_file, tmp_path

OUT_SCHEMA = pa.schema([f for f in LABEL_SCHEMA if f.name != "idx"])


def compact_labels(log_dir: Path, out_dir: Path, now: datetime | None = None) -> dict[str, Any]:
    """Fold the log into `out_dir`; returns the counts (parts, rows read, rows dropped as
    written twice, labels, current)."""
    parts = label_parts(log_dir)
    if not parts:
        raise UsageError(f"{log_dir}: no label log parts (labels/labeler=*/part-*.parquet)")
    now = now or datetime.now(UTC)
    rows, read = _rows(parts)
    latest: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for row in rows:  # in (seq, idx) order: a later row of a key replaces the earlier
        latest[(row["src"], row["uri"], row["cid"] or "", row["val"])] = row
    labels = [latest[key] for key in sorted(latest)]
    current = [row for row in labels if not row["neg"] and _in_force(row["exp"], now)]
    as_of = now.astimezone(UTC).isoformat()
    out_dir.mkdir(parents=True, exist_ok=True)
    _write(out_dir / "labels.parquet", labels, as_of)
    _write(out_dir / "labels_current.parquet", current, as_of)
    return {"parts": len(parts), "rows": read, "replayed": read - len(rows),
            "labels": len(labels), "labels_current": len(current)}  # fmt: skip


def _rows(parts: list[Path]) -> tuple[list[dict[str, Any]], int]:
    """The log's rows in (seq, idx) order, each once; and how many were read."""
    table = pa.concat_tables(pq.ParquetFile(p).read() for p in parts)
    table = table.sort_by([("seq", "ascending"), ("idx", "ascending")])
    seen: set[tuple[str, int, int]] = set()
    rows = []
    for row in table.to_pylist():
        mark = (row["labeler"], row["seq"], row["idx"])
        if mark not in seen:  # a replayed batch wrote it twice
            seen.add(mark)
            rows.append(row)
    return rows, table.num_rows


def _in_force(exp: str | None, now: datetime) -> bool:
    if exp is None:
        return True
    moment = datetime.fromisoformat(exp.replace("Z", "+00:00"))  # checked when received
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)) > now


def _write(path: Path, rows: list[dict[str, Any]], as_of: str) -> None:
    table = pa.Table.from_pylist([{k: r[k] for k in OUT_SCHEMA.names} for r in rows], OUT_SCHEMA)
    tmp = tmp_path(path)
    pq.write_table(table.replace_schema_metadata({"as_of": as_of}), tmp, compression="zstd")
    commit_file(tmp, path)

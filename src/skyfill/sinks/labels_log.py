"""Parquet label sink: an append-only log of every label a follower wrote.

`<dir>/labels/labeler=<key>/part-<first seq>-<last seq>.parquet`, one file per batch of
one labeler (`<key>`: its URL as a file name), written to a temporary name and renamed,
with `<file>.done` beside it once it is in place; then `<dir>/labels_cursor.json`
({labeler URL: seq}) is written. A crash between the two makes the next run write an
overlapping part again: readers (`labels_compact.py`) de-duplicate on (labeler, seq,
idx). Columns: labeler, seq, idx (the label's place in its frame), src, uri, cid, val,
neg, cts, exp, sig, ver. The directory may be a firehose's event log too (its files are
`events/` and `cursor.json`).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.failpoints import failpoint
from skyfill.sinks.labels import LabelBatch
from skyfill.storage.atomic import commit_file, tmp_path, write_bytes

LABEL_SCHEMA = pa.schema(
    [
        pa.field("labeler", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("idx", pa.int32(), nullable=False),
        pa.field("src", pa.string(), nullable=False),
        pa.field("uri", pa.string(), nullable=False),
        pa.field("cid", pa.string()),
        pa.field("val", pa.string(), nullable=False),
        pa.field("neg", pa.bool_(), nullable=False),
        pa.field("cts", pa.string(), nullable=False),
        pa.field("exp", pa.string()),
        pa.field("sig", pa.binary(), nullable=False),
        pa.field("ver", pa.int64()),
    ]
)
CURSOR_FILE = "labels_cursor.json"


def labeler_key(url: str) -> str:
    """`http://127.0.0.1:2585/x` -> `127.0.0.1-2585-x` (a directory name)."""
    rest = url.split("://", 1)[-1]
    return re.sub(r"[^A-Za-z0-9.]+", "-", rest).strip("-") or "labeler"


class LabelLogSink:
    kind = "parquet"

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.target = str(self.root)
        self._lock = threading.Lock()

    @property
    def _cursor_file(self) -> Path:
        return self.root / CURSOR_FILE

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def _cursors(self) -> dict[str, int]:
        if not self._cursor_file.exists():
            return {}
        return orjson.loads(self._cursor_file.read_bytes())

    def cursor(self, labeler: str) -> int | None:
        with self._lock:
            value = self._cursors().get(labeler)
        return None if value is None else int(value)

    def apply(self, batch: LabelBatch) -> int:
        with self._lock:
            if batch.rows:
                self._write_part(batch)
            failpoint("labels_applied")  # the part is in place, its cursor is not yet
            cursors = self._cursors()
            cursors[batch.labeler] = batch.cursor
            write_bytes(self._cursor_file, orjson.dumps(cursors))
        return len(batch.rows)

    def _write_part(self, batch: LabelBatch) -> None:
        rows = batch.rows
        columns: dict[str, list[Any]] = {
            "labeler": [batch.labeler] * len(rows),
            "seq": [r.seq for r in rows],
            "idx": [r.idx for r in rows],
        }
        for name in LABEL_SCHEMA.names[3:]:
            columns[name] = [getattr(r, name) for r in rows]
        table = pa.table(columns, schema=LABEL_SCHEMA)
        first = rows[0].seq
        path = (
            self.root
            / "labels"
            / f"labeler={labeler_key(batch.labeler)}"
            / f"part-{first:012d}-{batch.cursor:012d}.parquet"
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = tmp_path(path)
        pq.write_table(table, tmp, compression="zstd")
        commit_file(tmp, path)
        write_bytes(path.with_name(path.name + ".done"), b"")

    def close(self) -> None:
        pass

    def facts(self) -> dict[str, Any]:
        return {"parts": len(label_parts(self.root))}


def label_parts(root: Path) -> list[Path]:
    """The log's complete part files (their `.done` marker is there), in order."""
    return sorted(
        p
        for p in (root / "labels").glob("labeler=*/part-*.parquet")
        if p.with_name(p.name + ".done").exists()
    )

"""A task's segments become its task file: merged when there are several, taken as they are
(linked, not rewritten) when there is one."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.storage import spool
from skyfill.storage.merge import MergeSpec, sort_table

SCHEMA = pa.schema([("did", pa.string()), ("rkey", pa.string()), ("rev", pa.string())])
SPEC = MergeSpec(key_columns=("did", "rkey"), newest_column="rev")


def _segment(directory: Path, seq: int, rows: list[tuple[str, str, str]]) -> spool.Segment:
    table = pa.Table.from_pylist(
        [{"did": d, "rkey": k, "rev": r} for d, k, r in rows], schema=SCHEMA
    )
    return spool.write_segment(directory, "task-1", seq, sort_table(table, SPEC))


def test_one_segment_is_the_task_file_as_it_is(tmp_path: Path) -> None:
    segments = tmp_path / "segments"
    one = _segment(segments, 1, [("b", "1", "r1"), ("a", "2", "r1"), ("a", "1", "r1")])
    output = spool.merge_segments(segments, [one], SCHEMA, tmp_path / "task.parquet", SPEC)
    assert output.rows == 3
    assert (tmp_path / "task.parquet").stat().st_ino == (segments / one.path).stat().st_ino
    spool.remove_segments(segments)
    rows = pq.read_table(tmp_path / "task.parquet").to_pylist()
    assert [(r["did"], r["rkey"]) for r in rows] == [("a", "1"), ("a", "2"), ("b", "1")]
    assert output.sha256 == spool.sha256_file(tmp_path / "task.parquet")


def test_several_segments_are_merged_newest_first(tmp_path: Path) -> None:
    segments = tmp_path / "segments"
    first = _segment(segments, 1, [("a", "1", "r1"), ("c", "1", "r1")])
    second = _segment(segments, 2, [("a", "1", "r2"), ("b", "1", "r1")])
    target = tmp_path / "task.parquet"
    output = spool.merge_segments(segments, [first, second], SCHEMA, target, SPEC)
    rows = pq.read_table(target).to_pylist()
    assert [(r["did"], r["rev"]) for r in rows] == [("a", "r2"), ("b", "r1"), ("c", "r1")]
    assert output.rows == 3
    assert target.stat().st_ino not in {(segments / s.path).stat().st_ino for s in (first, second)}

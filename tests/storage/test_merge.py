"""The aggregator's merge: sort_table, merge_stream and reduce_to_fan_in on real files.

Results are checked against a plain-Python reference (dict of newest row per key, sorted
with nulls last), so the Arrow code is not checked against itself.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from skyfill.storage.atomic import sha256_file
from skyfill.storage.merge import (
    MergeOrderError,
    MergeSpec,
    fits_in_memory,
    merge_in_memory,
    merge_stream,
    sort_table,
    sort_table_by_group,
)
from skyfill.storage.merge_levels import MergeLevel, reduce_to_fan_in

SCHEMA = pa.schema(
    [
        ("did", pa.string()),
        ("collection", pa.string()),
        ("rkey", pa.string()),
        ("rev", pa.string()),
        ("row_id", pa.string()),
    ]
)
KEY = ("did", "collection", "rkey")
SPEC = MergeSpec(key_columns=KEY, newest_column="rev")
DIDS = ["did:plc:aaa", "did:plc:abc", "did:plc:é", "did:web:zz", "did:plc:😀", "did:plc:a\x00b"]
COLLECTIONS = ["app.bsky.feed.post", "app.bsky.feed.like", "app.bsky.graph.follow"]


# -- reference and data ------------------------------------------------------------------


def _order(value: Any) -> tuple[Any, ...]:
    return (1,) if value is None else (0, value)


def reference(rows: list[dict], key: tuple[str, ...], newest: str) -> list[dict]:
    """Newest row per key (ties: the first seen), sorted by key with nulls last."""
    best: dict[tuple[Any, ...], dict] = {}
    for row in rows:
        k = tuple(row[c] for c in key)
        if k not in best or _order_newest(row[newest]) > _order_newest(best[k][newest]):
            best[k] = row
    return [best[k] for k in sorted(best, key=lambda k: tuple(_order(v) for v in k))]


def _order_newest(value: Any) -> tuple[Any, ...]:
    return (0,) if value is None else (1, value)  # a null rev loses to every rev


def random_rows(rng: random.Random, n: int, tag: str, nulls: bool = False) -> list[dict]:
    rows = []
    for i in range(n):
        rkey = rng.choice(["3k2a", "3k2b", "3l", "3la", "", "Z", "é"]) + str(rng.randrange(9))
        rows.append(
            {
                "did": rng.choice(DIDS),
                "collection": rng.choice(COLLECTIONS),
                "rkey": None if nulls and rng.random() < 0.05 else rkey,
                "rev": None if nulls and rng.random() < 0.05 else f"3k{rng.randrange(40):02d}",
                "row_id": f"{tag}-{i}",
            }
        )
    return rows


def write(path: Path, rows: list[dict], spec: MergeSpec = SPEC, row_group: int = 50) -> Path:
    table = sort_table(pa.Table.from_pylist(rows, schema=SCHEMA), spec)
    pq.write_table(table, path, row_group_size=row_group, compression="zstd")
    return path


def make_inputs(
    directory: Path, rng: random.Random, files: int, nulls: bool = False
) -> tuple[list[Path], list[dict]]:
    """Sorted input files (some empty) and all their rows in input order."""
    directory.mkdir(parents=True, exist_ok=True)
    paths, everything = [], []
    for f in range(files):
        n = 0 if rng.random() < 0.15 else rng.randrange(1, 300)
        rows = random_rows(rng, n, f"f{f}", nulls)
        paths.append(
            write(directory / f"task-{f:04d}.parquet", rows, row_group=rng.randrange(1, 80))
        )
        everything.extend(pq.read_table(paths[-1]).to_pylist())
    return paths, everything


def read_all(paths: list[Path], spec: MergeSpec = SPEC) -> list[dict]:
    return merge_stream(paths, spec, SCHEMA).read_all().to_pylist()


# -- sort_table ----------------------------------------------------------------------------


def test_sort_table_sorts_and_keeps_the_newest_row_of_each_key() -> None:
    rows = [
        {"did": "b", "collection": "c", "rkey": "1", "rev": "3k1", "row_id": "old"},
        {"did": "a", "collection": "c", "rkey": "2", "rev": None, "row_id": "a-null"},
        {"did": "b", "collection": "c", "rkey": "1", "rev": "3k3", "row_id": "new"},
        {"did": "a", "collection": "c", "rkey": "2", "rev": "3k0", "row_id": "a-rev"},
        {"did": "b", "collection": "c", "rkey": "1", "rev": "3k2", "row_id": "mid"},
        {"did": "a", "collection": "c", "rkey": "10", "rev": "3k0", "row_id": "a10"},
    ]
    table = sort_table(pa.Table.from_pylist(rows, schema=SCHEMA), SPEC)
    assert table.column("row_id").to_pylist() == ["a10", "a-rev", "new"]


@pytest.mark.parametrize("seed", range(5))
def test_sort_table_matches_the_reference(seed: int) -> None:
    rows = random_rows(random.Random(seed), 2000, "r", nulls=True)
    table = sort_table(pa.Table.from_pylist(rows, schema=SCHEMA), SPEC)
    assert table.to_pylist() == reference(rows, KEY, "rev")


def test_sort_table_of_an_empty_table() -> None:
    assert sort_table(SCHEMA.empty_table(), SPEC).num_rows == 0


# -- merge_stream --------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_merge_equals_sorting_the_concatenation(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    paths, rows = make_inputs(tmp_path, rng, files=rng.randrange(2, 14), nulls=seed % 2 == 1)
    spec = MergeSpec(key_columns=KEY, newest_column="rev", batch_rows=rng.choice([3, 17, 64, 4096]))
    expected = reference(rows, KEY, "rev")
    assert read_all(paths, spec) == expected
    assert sort_table(pa.Table.from_pylist(rows, schema=SCHEMA), spec).to_pylist() == expected


def test_newest_row_wins_across_files(tmp_path: Path) -> None:
    def row(rkey: str, rev: str, row_id: str) -> dict:
        return {"did": "d", "collection": "c", "rkey": rkey, "rev": rev, "row_id": row_id}

    a = write(tmp_path / "a.parquet", [row("1", "3k1", "a1"), row("2", "3k9", "a2")])
    b = write(tmp_path / "b.parquet", [row("1", "3k5", "b1"), row("3", "3k1", "b3")])
    c = write(tmp_path / "c.parquet", [row("1", "3k2", "c1"), row("2", "3k8", "c2")])
    d = write(tmp_path / "d.parquet", [row("3", "3k1", "d3")])  # same rev: earlier input wins
    assert [r["row_id"] for r in read_all([a, b, c, d])] == ["b1", "a2", "b3"]


def test_merge_of_generic_key_types(tmp_path: Path) -> None:
    """Integer and nanosecond timestamp keys (1 ns apart), an integer version column."""
    schema = pa.schema([("n", pa.int64()), ("at", pa.timestamp("ns")), ("version", pa.int32())])
    spec = MergeSpec(key_columns=("n", "at"), newest_column="version", batch_rows=5)
    rng = random.Random(7)
    start = pa.scalar(datetime(2024, 1, 1), pa.timestamp("ns")).value
    tables, paths = [], []
    for f in range(4):
        rows = [
            {"n": rng.randrange(-3, 4), "at": start + rng.randrange(3), "version": rng.randrange(5)}
            for _ in range(40)
        ]
        tables.append(sort_table(pa.Table.from_pylist(rows, schema=schema), spec))
        paths.append(tmp_path / f"{f}.parquet")
        pq.write_table(tables[-1], paths[-1], row_group_size=7)
    merged = merge_stream(paths, spec, schema).read_all()
    assert merged.equals(sort_table(pa.concat_tables(tables), spec))
    as_ints = pa.concat_tables(tables).cast(
        pa.schema([("n", pa.int64()), ("at", pa.int64()), ("version", pa.int32())])
    )
    best: dict[tuple[int, int], int] = {}
    for row in as_ints.to_pylist():
        key = (row["n"], row["at"])
        best[key] = max(best.get(key, -1), row["version"])
    assert merged.cast(as_ints.schema).to_pylist() == [
        {"n": n, "at": at, "version": best[(n, at)]} for n, at in sorted(best)
    ]


def test_merge_streams_in_bounded_batches(tmp_path: Path) -> None:
    spec = MergeSpec(key_columns=KEY, newest_column="rev", batch_rows=1000)
    paths = []
    for f in range(3):
        rows = [
            {
                "did": f"did:plc:{i:06d}",
                "collection": "c",
                "rkey": str(f),
                "rev": "3k",
                "row_id": "",
            }
            for i in range(8000)
        ]
        paths.append(write(tmp_path / f"{f}.parquet", rows, spec, row_group=3000))
    sizes = [batch.num_rows for batch in merge_stream(paths, spec, SCHEMA)]
    assert sum(sizes) == 24_000
    assert len(sizes) > 10
    assert max(sizes) < 1500
    assert min(sizes[:-1]) >= 500


def test_merge_of_no_rows(tmp_path: Path) -> None:
    empty = [write(tmp_path / f"{i}.parquet", []) for i in range(3)]
    assert merge_stream(empty, SPEC, SCHEMA).read_all().num_rows == 0
    assert merge_stream([], SPEC, SCHEMA).read_all().schema == SCHEMA


@pytest.mark.parametrize(
    "rkeys",
    [["c", "d", "a", "b"], ["a", "b", "b", "c"]],
    ids=["unsorted", "duplicate-key"],
)
def test_merge_refuses_inputs_that_are_not_sorted_and_unique(
    tmp_path: Path, rkeys: list[str]
) -> None:
    rows = [{"did": "d", "collection": "c", "rkey": k, "rev": "1", "row_id": ""} for k in rkeys]
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pylist(rows, schema=SCHEMA), path)
    spec = MergeSpec(key_columns=KEY, newest_column="rev", batch_rows=2)
    with pytest.raises(MergeOrderError):
        merge_stream([path], spec, SCHEMA).read_all()


def test_merge_spec_is_checked() -> None:
    with pytest.raises(ValueError):
        MergeSpec(key_columns=(), newest_column="rev")
    with pytest.raises(ValueError):
        MergeSpec(key_columns=KEY, newest_column="rev", fan_in=1)
    with pytest.raises(ValueError):
        MergeSpec(key_columns=KEY, newest_column="rkey")


# -- reduce_to_fan_in ------------------------------------------------------------------------


def check_outputs(directory: Path, levels: list[MergeLevel]) -> None:
    """Every output: a `.done` marker holding its sha256, rows and inputs, matching the file."""
    for level in levels:
        for output in level.outputs:
            path = directory / output["file"]
            marker = json.loads(path.with_suffix(".done").read_text())
            assert {k: marker[k] for k in ("inputs", "rows", "sha256")} == {
                k: output[k] for k in ("inputs", "rows", "sha256")
            }
            assert len(marker["input_versions"]) == len(output["inputs"])
            assert sha256_file(path) == output["sha256"]
            assert pq.ParquetFile(path).metadata.num_rows == output["rows"]
    assert not [p for p in directory.rglob("*") if p.name.endswith(".tmp")]


def test_reduce_95_inputs_to_fan_in_4(tmp_path: Path) -> None:
    paths, rows = make_inputs(tmp_path / "tasks", random.Random(95), files=95)
    spec = MergeSpec(key_columns=KEY, newest_column="rev", fan_in=4, batch_rows=64)
    directory = tmp_path / "aggregation"
    finals, levels = reduce_to_fan_in(paths, directory, spec, SCHEMA)

    assert 1 < len(finals) <= 4
    assert [level.level for level in levels] == [1, 2, 3]
    # 95 -> 24 (23 groups of 4, one of 3) -> 6 -> 4 (only 3 of the 6 need merging)
    assert [len(level.outputs) for level in levels] == [24, 6, 1]
    assert levels[0].outputs[0]["inputs"] == [f"../tasks/task-{i:04d}.parquet" for i in range(4)]
    assert levels[0].outputs[-1]["file"] == "level-1/merge-00023.parquet"
    assert levels[2].outputs[0]["inputs"] == [f"level-2/merge-{i:05d}.parquet" for i in range(3)]
    assert [p.relative_to(directory).as_posix() for p in finals] == [
        "level-3/merge-00000.parquet",
        "level-2/merge-00003.parquet",
        "level-2/merge-00004.parquet",
        "level-2/merge-00005.parquet",
    ]
    check_outputs(directory, levels)
    assert read_all(finals, spec) == reference(rows, KEY, "rev")


def test_reduce_does_not_depend_on_the_number_of_workers(tmp_path: Path) -> None:
    paths, _ = make_inputs(tmp_path / "tasks", random.Random(5), files=30)
    results = []
    for workers in (1, 3):
        spec = MergeSpec(key_columns=KEY, newest_column="rev", fan_in=3, workers=workers)
        finals, levels = reduce_to_fan_in(paths, tmp_path / f"w{workers}", spec, SCHEMA)
        results.append(([p.relative_to(tmp_path / f"w{workers}") for p in finals], levels))
    assert results[0] == results[1]


def test_reduce_of_empty_inputs(tmp_path: Path) -> None:
    paths = [write(tmp_path / f"{i}.parquet", []) for i in range(5)]
    spec = MergeSpec(key_columns=KEY, newest_column="rev", fan_in=2)
    finals, levels = reduce_to_fan_in(paths, tmp_path / "aggregation", spec, SCHEMA)
    assert len(finals) == 2
    assert {o["rows"] for level in levels for o in level.outputs} == {0}
    check_outputs(tmp_path / "aggregation", levels)
    assert read_all(finals, spec) == []


def test_reduce_leaves_few_inputs_alone(tmp_path: Path) -> None:
    paths, _ = make_inputs(tmp_path / "tasks", random.Random(3), files=4)
    spec = MergeSpec(key_columns=KEY, newest_column="rev", fan_in=4)
    assert reduce_to_fan_in(paths, tmp_path / "aggregation", spec, SCHEMA) == (paths, [])
    assert not (tmp_path / "aggregation").exists()


def test_reduce_resumes_after_a_crash(tmp_path: Path) -> None:
    paths, rows = make_inputs(tmp_path / "tasks", random.Random(11), files=40)
    spec = MergeSpec(key_columns=KEY, newest_column="rev", fan_in=3, batch_rows=32)
    directory = tmp_path / "aggregation"
    finals, levels = reduce_to_fan_in(paths, directory, spec, SCHEMA)
    outputs = [directory / o["file"] for level in levels for o in level.outputs]
    assert len(outputs) > 10

    # the state a crash can leave: renamed but not marked, never renamed, half written
    unmarked, missing, truncated = outputs[1], outputs[5], outputs[-2]
    unmarked.with_suffix(".done").unlink()
    missing.unlink()
    missing.with_suffix(".done").unlink()
    truncated.write_bytes(truncated.read_bytes()[:100])
    truncated.with_suffix(".done").unlink()
    (truncated.parent / f".{truncated.name}.tmp").write_bytes(b"PAR1 partial")
    (directory / "level-1" / ".merge-00099.parquet.tmp").write_bytes(b"stray")
    survivors = [p for p in outputs if p.with_suffix(".done").exists()]
    before = {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in survivors}

    again, levels_again = reduce_to_fan_in(paths, directory, spec, SCHEMA)
    assert (again, levels_again) == (finals, levels)
    assert {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in survivors} == before
    (directory / "level-1" / ".merge-00099.parquet.tmp").unlink()
    check_outputs(directory, levels_again)
    assert read_all(again, spec) == reference(rows, KEY, "rev")


def test_reduce_does_not_reuse_outputs_of_other_inputs(tmp_path: Path) -> None:
    spec = MergeSpec(key_columns=KEY, newest_column="rev", fan_in=2)
    first, _ = make_inputs(tmp_path / "a", random.Random(1), files=5)
    second, rows = make_inputs(tmp_path / "b", random.Random(2), files=5)
    directory = tmp_path / "aggregation"
    reduce_to_fan_in(first, directory, spec, SCHEMA)
    finals, levels = reduce_to_fan_in(second, directory, spec, SCHEMA)
    check_outputs(directory, levels)
    assert read_all(finals, spec) == reference(rows, KEY, "rev")


CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    import skyfill.storage.merge_levels as aggregate
    from tests.storage.test_merge import SCHEMA, KEY

    commit = aggregate.commit_file
    def slow_commit(tmp, path):  # widen the window in which a kill leaves a partial file
        time.sleep(0.05)
        commit(tmp, path)
    aggregate.commit_file = slow_commit

    spec = aggregate.MergeSpec(key_columns=KEY, newest_column="rev", fan_in=2, batch_rows=32)
    paths = sorted(Path(sys.argv[1]).glob("task-*.parquet"))
    aggregate.reduce_to_fan_in(paths, Path(sys.argv[2]), spec, SCHEMA)
    """
)


def test_reduce_after_kill_9_gives_the_same_result(tmp_path: Path) -> None:
    paths, rows = make_inputs(tmp_path / "tasks", random.Random(9), files=24)
    spec = MergeSpec(key_columns=KEY, newest_column="rev", fan_in=2, batch_rows=32)
    clean_finals, clean_levels = reduce_to_fan_in(paths, tmp_path / "clean", spec, SCHEMA)

    directory = tmp_path / "killed"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(tmp_path / "tasks"), str(directory)],
        cwd=Path(__file__).parents[2],
    )
    deadline = time.monotonic() + 60
    while len(list(directory.rglob("*.done"))) < 3 and child.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    done_at_kill = {p: p.stat().st_mtime_ns for p in directory.rglob("*.parquet")}
    done_at_kill = {p: m for p, m in done_at_kill.items() if p.with_suffix(".done").exists()}
    assert 3 <= len(done_at_kill) < sum(len(level.outputs) for level in clean_levels)

    finals, levels = reduce_to_fan_in(paths, directory, spec, SCHEMA)
    assert levels == clean_levels  # same names, rows and sha256: byte-identical files
    assert [p.relative_to(directory) for p in finals] == [
        p.relative_to(tmp_path / "clean") for p in clean_finals
    ]
    assert {p: p.stat().st_mtime_ns for p in done_at_kill} == done_at_kill
    check_outputs(directory, levels)
    assert read_all(finals, spec) == reference(rows, KEY, "rev")


@pytest.mark.parametrize("seed", range(8))
def test_merge_in_memory_gives_what_the_stream_gives(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    paths, rows = make_inputs(tmp_path, rng, files=rng.randrange(1, 14), nulls=seed % 2 == 1)
    spec = MergeSpec(key_columns=KEY, newest_column="rev", batch_rows=rng.choice([3, 64, 4096]))
    streamed = merge_stream(paths, spec, SCHEMA).read_all()
    in_memory = merge_in_memory(paths, spec, SCHEMA).rows
    batches = list(in_memory)
    assert all(len(batch) <= spec.batch_rows for batch in batches)
    assert pa.Table.from_batches(batches, SCHEMA).equals(streamed)
    assert streamed.to_pylist() == reference(rows, KEY, "rev")
    assert fits_in_memory(paths, 1 << 30) and not fits_in_memory(paths, 0)


# -- group_by, and inputs that need no sort ---------------------------------------------------


def grouped_spec(rng: random.Random, group_by: str | None = "collection") -> MergeSpec:
    rows = rng.choice([3, 64, 4096])
    return MergeSpec(key_columns=KEY, newest_column="rev", group_by=group_by, batch_rows=rows)


def windows(total: int, rows: int) -> list[int]:
    return [min(rows, total - start) for start in range(0, total, rows)]


@pytest.mark.parametrize("seed", range(6))
def test_a_grouped_merge_orders_rows_by_the_group_first(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    spec = grouped_spec(rng)
    assert spec.order_columns == ("collection", "did", "rkey")
    paths, rows = [], []
    for f in range(rng.randrange(1, 9)):
        file_rows = random_rows(rng, rng.randrange(0, 200), f"f{f}", nulls=seed % 2 == 1)
        paths.append(write(tmp_path / f"task-{f:04d}.parquet", file_rows, spec, row_group=7))
        rows.extend(pq.read_table(paths[-1]).to_pylist())
    expected = reference(rows, spec.order_columns, "rev")
    assert merge_stream(paths, spec, SCHEMA).read_all().to_pylist() == expected
    assert (
        pa.Table.from_batches(list(merge_in_memory(paths, spec, SCHEMA).rows)).to_pylist()
        == expected
    )
    # a file sorted by the key columns alone is out of a grouped merge's order
    two = [
        {"did": "did:plc:a", "collection": "b.b", "rkey": "1", "rev": "3k", "row_id": "u1"},
        {"did": "did:plc:b", "collection": "a.a", "rkey": "1", "rev": "3k", "row_id": "u2"},
    ]
    ungrouped = write(tmp_path / "ungrouped.parquet", two, SPEC, row_group=1)
    with pytest.raises(MergeOrderError):
        merge_stream([ungrouped], spec, SCHEMA).read_all()


RANGE_DIDS = sorted(f"did:plc:{c}{i}" for c in ("a", "b", "é", "😀", "a\x00") for i in range(6))


def disjoint_inputs(
    directory: Path, rng: random.Random, spec: MergeSpec, files: int
) -> tuple[list[Path], list[dict]]:
    """Sorted files, each of the rows of its own range of DIDs (some empty), in an order
    that is not their ranges'."""
    directory.mkdir(parents=True, exist_ok=True)
    cuts = sorted(rng.sample(range(1, len(RANGE_DIDS)), files - 1))
    ranges = [RANGE_DIDS[a:b] for a, b in zip([0, *cuts], [*cuts, len(RANGE_DIDS)], strict=True)]
    rng.shuffle(ranges)
    paths, everything = [], []
    for f, dids in enumerate(ranges):
        rows = random_rows(rng, 0 if rng.random() < 0.15 else rng.randrange(1, 150), f"f{f}")
        for row in rows:
            row["did"] = rng.choice(dids)
        paths.append(write(directory / f"task-{f:04d}.parquet", rows, spec, rng.randrange(1, 40)))
        everything.extend(pq.read_table(paths[-1]).to_pylist())
    return paths, everything


@pytest.mark.parametrize("group_by", [None, "collection"])
@pytest.mark.parametrize("seed", range(5))
def test_inputs_of_disjoint_ranges_are_concatenated_in_merge_order(
    tmp_path: Path, seed: int, group_by: str | None
) -> None:
    rng = random.Random(seed)
    spec = grouped_spec(rng, group_by)
    paths, rows = disjoint_inputs(tmp_path, rng, spec, files=rng.randrange(2, 9))
    merged = merge_in_memory(paths, spec, SCHEMA)
    assert merged.concatenated  # (not sorted again)
    batches = list(merged.rows)
    expected = reference(rows, spec.order_columns, "rev")
    assert pa.Table.from_batches(batches, SCHEMA).to_pylist() == expected
    # the batches the sort would make of the same rows: what a sink writes is the same
    assert [len(b) for b in batches] == windows(len(expected), spec.batch_rows)
    assert merge_stream(paths, spec, SCHEMA).read_all().to_pylist() == expected


def test_inputs_that_need_a_sort_are_sorted(tmp_path: Path) -> None:
    """Overlapping ranges, a file out of order, a key twice in one file, a null in the
    range column: not concatenated, but sorted and de-duplicated as any inputs."""
    rng = random.Random(7)
    spec = grouped_spec(rng)
    paths, rows = disjoint_inputs(tmp_path / "base", rng, spec, files=4)
    first = rows[0]
    cases: dict[str, list[dict]] = {
        "overlap": [{**first, "collection": "zz.other", "row_id": "overlap"}],
        "null": [{**first, "did": None, "row_id": "null"}],
    }
    for name, extra in cases.items():
        extra_path = write(tmp_path / f"{name}.parquet", extra, spec)
        merged = merge_in_memory([*paths, extra_path], spec, SCHEMA)
        assert not merged.concatenated, name
        got = pa.Table.from_batches(list(merged.rows)).to_pylist()
        assert got == reference(rows + extra, spec.order_columns, "rev"), name
    biggest = max(paths, key=lambda path: pq.ParquetFile(path).metadata.num_rows)
    others = [path for path in paths if path != biggest]
    unsorted = pq.read_table(biggest).to_pylist()
    assert len(unsorted) > 2
    unsorted = [*unsorted[::-1], {**unsorted[0], "rev": "3k99", "row_id": "twice"}]
    for name, bad_rows in {"reversed": unsorted[:-1], "twice": unsorted}.items():
        bad = tmp_path / f"{name}.parquet"
        pq.write_table(pa.Table.from_pylist(bad_rows, schema=SCHEMA), bad)
        merged = merge_in_memory([bad, *others], spec, SCHEMA)
        assert not merged.concatenated, name
        everything = bad_rows + [r for p in others for r in pq.read_table(p).to_pylist()]
        got = pa.Table.from_batches(list(merged.rows)).to_pylist()
        assert got == reference(everything, spec.order_columns, "rev"), name


@pytest.mark.parametrize("seed", range(6))
def test_sort_table_by_group_equals_sort_table(seed: int) -> None:
    """Rows in order but for the group (key after key, each key's rows sorted by the rest),
    and any rows at all (duplicates, nulls): the same table as sort_table gives."""
    rng = random.Random(seed)
    spec = grouped_spec(rng)
    rows = random_rows(rng, rng.randrange(0, 300), "r", nulls=seed % 2 == 1)
    by_did = sorted(
        reference(rows, KEY, "rev"),
        key=lambda r: (r["did"], _order(r["collection"]), _order(r["rkey"])),
    )
    for given in (by_did, rows):
        table = pa.Table.from_pylist(given, schema=SCHEMA)
        assert sort_table_by_group(table, spec).equals(sort_table(table, spec))
    assert sort_table_by_group(pa.Table.from_pylist(rows, schema=SCHEMA), spec).to_pylist() == (
        reference(rows, spec.order_columns, "rev")
    )

"""Aggregation benchmark: hierarchical, streaming merge of sorted task files.

Generates `--rows` rows shaped like skyfill's `records` (did, collection, rkey, uri, cid,
rev, record JSON text of ~100-200 bytes, job_id) spread over `--files` task files of
100 DIDs each, each file sorted and de-duplicated with `skyfill.storage.merge.sort_table`
and written with zstd, as worker tasks write theirs. About `--dup-fraction` of each file's
rows repeat a key of the previous file with a newer rev (as a retry would), so the newer
row must win.

Then, in a fresh subprocess that does only the merge (so that generation does not count
towards its memory), it times
  reduce   `reduce_to_fan_in` (levels of `--fan-in`-way merges written to disk,
           `--workers` merges of a level at once)
  final    draining `merge_stream` over the remaining files into one Parquet file
and reports rows/s (input rows / seconds), the CPU time used, the peak RSS of that
subprocess (VmHWM from /proc/self/status), its peak before merging (interpreter +
pyarrow), and the Arrow memory pool's peak. It checks the final row count and that every
duplicate key kept its newer row. Peak memory should not grow with --rows: compare runs.

Everything lives in a temporary directory under `--tmp` (default /tmp), deleted at the
end unless `--keep` is given. Disk use is about four times the compressed input (input,
intermediate levels, final file); the sizes are printed.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyfill.storage.merge import MergeSpec, merge_stream, sort_table
from skyfill.storage.merge_levels import reduce_to_fan_in

SCHEMA = pa.schema(
    [
        ("did", pa.string()),
        ("collection", pa.string()),
        ("rkey", pa.string()),
        ("uri", pa.string()),
        ("cid", pa.string()),
        ("rev", pa.string()),
        ("record", pa.string()),
        ("job_id", pa.string()),
    ]
)
KEY = ("did", "collection", "rkey")
DIDS_PER_FILE = 100
BASE32 = b"234567abcdefghijklmnopqrstuvwxyz"
TO_BASE32 = bytes(BASE32[b % 32] for b in range(256))
COLLECTIONS = {  # share of rows, in percent
    "app.bsky.feed.like": 40,
    "app.bsky.feed.post": 30,
    "app.bsky.graph.follow": 15,
    "app.bsky.feed.repost": 10,
    "app.bsky.graph.block": 3,
    "app.bsky.actor.profile": 2,
}
WORDS = [
    "the",
    "a",
    "bluesky",
    "post",
    "today",
    "with",
    "about",
    "from",
    "some",
    "what",
    "people",
    "just",
    "like",
    "really",
    "feed",
    "skyfill",
    "backfill",
    "record",
    "repo",
    "data",
    "network",
    "time",
    "good",
    "new",
    "more",
    "think",
    "know",
    "see",
    "day",
    "#atproto",
    "@handle.bsky.social",
    "https://example.com/link",
    "2024",
    "ok",
    "yes",
    "no",
    "lol",
]
OLD_REV, NEW_REV = "3k", "3m"  # every duplicate's rev sorts after every original's
SPEC_FOR_SORT = MergeSpec(key_columns=KEY, newest_column="rev")


# -- generation --------------------------------------------------------------------------


def base32_strings(rng: random.Random, n: int, width: int, prefix: str = "") -> pa.Array:
    """`n` random strings of `width` base32-sortable characters after `prefix`."""
    data = rng.randbytes(n * width).translate(TO_BASE32)
    offsets = pa.array(range(0, n * width + 1, width), pa.int32())
    array = pa.Array.from_buffers(pa.string(), n, [None, offsets.buffers()[1], pa.py_buffer(data)])
    return pc.binary_join_element_wise(prefix, array, "") if prefix else array


def small_ints(rng: random.Random, n: int, modulo: int) -> pa.Array:
    raw = pa.Array.from_buffers(pa.uint16(), n, [None, pa.py_buffer(rng.randbytes(2 * n))])
    return pc.remainder(raw, modulo)


def texts(rng: random.Random, n: int, corpus: bytes) -> pa.Array:
    """`n` consecutive slices of `corpus` (ASCII, no quotes), 40-140 bytes each."""
    lengths = [40 + b % 101 for b in rng.randbytes(n)]
    start = rng.randrange(len(corpus) - 141 * n)
    offsets = pa.array(itertools.accumulate(lengths, initial=0), pa.int32())
    data = pa.py_buffer(corpus[start : start + offsets[-1].as_py()])
    return pa.Array.from_buffers(pa.string(), n, [None, offsets.buffers()[1], data])


def fresh_rows(rng: random.Random, n: int, corpus: bytes, job_id: str) -> pa.Table:
    dids = base32_strings(rng, DIDS_PER_FILE, 24, "did:plc:")
    revs = base32_strings(rng, DIDS_PER_FILE, 11, OLD_REV)
    which = small_ints(rng, n, DIDS_PER_FILE)
    shares = [i for i, pct in enumerate(COLLECTIONS.values()) for _ in range(pct)]
    kinds = pc.take(pa.array(shares, pa.int8()), small_ints(rng, n, 100))
    collection = pc.take(pa.array(list(COLLECTIONS)), kinds)
    did = pc.take(dids, which)
    rkey = base32_strings(rng, n, 13)
    record = pc.binary_join_element_wise(
        '{"$type":"', collection, '","createdAt":"2024-05-01T12:00:00.000Z","text":"',
        texts(rng, n, corpus), '"}', "",
    )  # fmt: skip
    return pa.table(
        {
            "did": did,
            "collection": collection,
            "rkey": rkey,
            "uri": pc.binary_join_element_wise("at://", did, "/", collection, "/", rkey, ""),
            "cid": base32_strings(rng, n, 52, "bafyrei"),
            "rev": pc.take(revs, which),
            "record": record,
            "job_id": pa.repeat(job_id, n).cast(pa.string()),
        },
        schema=SCHEMA,
    )


def newer_copies(rng: random.Random, previous: pa.Table, n: int) -> pa.Table:
    """`n` rows of `previous` (distinct) with a newer rev and another cid."""
    picked = previous.take(sorted(rng.sample(range(previous.num_rows), n)))
    picked = picked.set_column(4, "cid", base32_strings(rng, n, 52, "bafyrei"))
    return picked.set_column(5, "rev", base32_strings(rng, n, 11, NEW_REV))


def generate(directory: Path, rows: int, files: int, dup_fraction: float, seed: int) -> dict:
    """Write `files` sorted task files; return what the merge must produce."""
    rng = random.Random(seed)
    corpus = " ".join(rng.choices(WORDS, k=2_000_000)).encode()
    directory.mkdir(parents=True)
    previous: pa.Table | None = None
    duplicates = 0
    for f in range(files):
        n = rows // files + (1 if f < rows % files else 0)
        dups = min(round(n * dup_fraction), previous.num_rows) if previous is not None else 0
        fresh = fresh_rows(rng, n - dups, corpus, "bench-aggregate")
        parts = [fresh] if previous is None else [fresh, newer_copies(rng, previous, dups)]
        table = sort_table(pa.concat_tables(parts), SPEC_FOR_SORT)
        pq.write_table(table, directory / f"task-{f:05d}.parquet", compression="zstd")
        duplicates += dups
        previous = fresh
    return {"rows": rows, "duplicates": duplicates, "expected_rows": rows - duplicates}


# -- the measured merge (runs in its own process) ----------------------------------------


def peak_rss_mb() -> float:
    """This process's peak RSS: VmHWM (unlike ru_maxrss, not carried over from a fork)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_merge(directory: Path, spec: MergeSpec) -> dict:
    inputs = sorted((directory / "tasks").glob("task-*.parquet"))
    rss_before = peak_rss_mb()
    cpu_before = cpu_seconds()
    started = time.perf_counter()
    finals, levels = reduce_to_fan_in(inputs, directory / "aggregation", spec, SCHEMA)
    reduced = time.perf_counter()
    rss_reduce = peak_rss_mb()
    rows = 0
    target = directory / "final.parquet"
    with pq.ParquetWriter(target, SCHEMA, compression="zstd") as writer:
        for batch in merge_stream(finals, spec, SCHEMA):
            writer.write_batch(batch, row_group_size=batch.num_rows)  # one row group
            rows += batch.num_rows
    finished = time.perf_counter()
    return {
        "reduce_seconds": reduced - started,
        "final_seconds": finished - reduced,
        "levels": [len(level.outputs) for level in levels],
        "final_inputs": len(finals),
        "output_rows": rows,
        "rss_before_mb": rss_before,
        "rss_peak_reduce_mb": rss_reduce,
        "rss_peak_mb": peak_rss_mb(),
        "cpu_seconds": cpu_seconds() - cpu_before,
        "arrow_pool_peak_mb": pa.default_memory_pool().max_memory() / 2**20,
        "arrow_backend": pa.default_memory_pool().backend_name,
    }


def directory_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def check_output(path: Path, expected: dict) -> None:
    table = pq.read_table(path, columns=["rev"])
    if table.num_rows != expected["expected_rows"]:
        raise SystemExit(f"wrong row count: {table.num_rows} != {expected['expected_rows']}")
    newer = pc.sum(pc.starts_with(table["rev"], NEW_REV)).as_py() or 0
    if newer != expected["duplicates"]:
        raise SystemExit(f"{newer} newer rows kept, expected {expected['duplicates']}")


# -- command line ------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=10_000_000, help="rows in all task files")
    parser.add_argument("--files", type=int, default=1000, help="task files")
    parser.add_argument("--fan-in", type=int, default=10, help="files merged at once")
    parser.add_argument("--batch-rows", type=int, default=65_536, help="rows per batch")
    parser.add_argument("--workers", type=int, default=2, help="merges of a level at once")
    parser.add_argument("--dup-fraction", type=float, default=0.01, help="rows that repeat a key")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmp", type=Path, default=Path("/tmp"), help="where to make the files")
    parser.add_argument("--keep", action="store_true", help="do not delete the files")
    parser.add_argument("--merge-dir", type=Path, help=argparse.SUPPRESS)  # the subprocess
    args = parser.parse_args()
    if args.merge_dir is not None:
        spec = MergeSpec(
            key_columns=KEY,
            newest_column="rev",
            fan_in=args.fan_in,
            batch_rows=args.batch_rows,
            workers=args.workers,
        )
        print(json.dumps(run_merge(args.merge_dir, spec)))
        return

    workdir = Path(tempfile.mkdtemp(prefix="skyfill-bench-aggregate-", dir=args.tmp))
    try:
        started = time.perf_counter()
        expected = generate(workdir / "tasks", args.rows, args.files, args.dup_fraction, args.seed)
        print(
            f"generated {args.rows:,} rows ({expected['duplicates']:,} duplicate keys) in "
            f"{args.files} files, {directory_mb(workdir / 'tasks'):,.0f} MB, "
            f"in {time.perf_counter() - started:.1f} s",
            flush=True,
        )
        child = [sys.executable, __file__, "--merge-dir", str(workdir)]
        child += ["--fan-in", str(args.fan_in), "--batch-rows", str(args.batch_rows)]
        child += ["--workers", str(args.workers)]
        result = json.loads(subprocess.run(child, check=True, capture_output=True).stdout)
        check_output(workdir / "final.parquet", expected)
        report(args, result, workdir)
    finally:
        if not args.keep:
            shutil.rmtree(workdir)


def report(args: argparse.Namespace, r: dict, workdir: Path) -> None:
    rows = args.rows
    stages = [
        ("reduce_to_fan_in", r["reduce_seconds"], f"levels of merges {r['levels']}"),
        ("final merge_stream", r["final_seconds"], f"{r['final_inputs']} files -> file"),
        ("total", r["reduce_seconds"] + r["final_seconds"], ""),
    ]
    print(
        f"fan-in {args.fan_in}, batch {args.batch_rows:,} rows, {args.workers} workers,"
        f" {rows:,} input rows"
    )
    for name, seconds, note in stages:
        print(f"  {name:<18} {seconds:7.1f} s {rows / seconds:>12,.0f} rows/s  {note}")
    print(f"  output rows {r['output_rows']:,} (checked: count, newer rev kept)")
    cores = r["cpu_seconds"] / (r["reduce_seconds"] + r["final_seconds"])
    print(f"  CPU {r['cpu_seconds']:.1f} s (user + system), {cores:.2f} cores busy on average")
    print(
        f"  peak RSS {r['rss_peak_mb']:,.0f} MB (after reduce {r['rss_peak_reduce_mb']:,.0f} MB,"
        f" before merging {r['rss_before_mb']:,.0f} MB); Arrow pool peak"
        f" {r['arrow_pool_peak_mb']:,.0f} MB ({r['arrow_backend']})"
    )
    print(
        f"  disk: tasks {directory_mb(workdir / 'tasks'):,.0f} MB, intermediate"
        f" {directory_mb(workdir / 'aggregation'):,.0f} MB,"
        f" final {(workdir / 'final.parquet').stat().st_size / 1e6:,.0f} MB"
    )


if __name__ == "__main__":
    main()

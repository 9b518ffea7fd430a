"""SQL sink benchmark: loading the final dataset into PostgreSQL (and SQLite to compare).

Generates `--rows` synthetic `records` rows (default 1,000,000) shaped like skyfill's:
`--rows / --per-did` DIDs, each with posts, likes, follows and reposts under TID-like rkeys,
sorted by (did, collection, rkey) as the aggregator delivers them, with a `bafyrei…` cid, a
rev, a created_at and an atproto JSON record of about 300 bytes; plus one `repos` row per
DID. The rows are written to Parquet files first (not timed) and read back in batches of
`--batch-rows`, as the aggregator streams them. A second file has every tenth row changed
(new cid, text and rev).

Then, for each sink, three loads through the sink's `write()` (the code path `skyfill run
--sink` takes), each timed from the first batch to the commit:
  first     into empty tables
  replay    the same rows again: must change nothing (idempotent)
  changed   10% of the rows changed: must update exactly those
and prints rows/s (input rows / seconds) with the sink's own counts (inserted, updated,
unchanged, deleted), which are checked. PostgreSQL is a fresh server started as the tests
start theirs (tests/pgserver.py: initdb into a temporary directory, a free loopback port;
fsync, synchronous_commit and full_page_writes off unless `--durable`). SQLite is a file
under `--tmp` (default /tmp) with its defaults (WAL, synchronous FULL).

    .venv/bin/python benchmarks/postgres_load.py                 # 1M rows, both sinks
    .venv/bin/python benchmarks/postgres_load.py --rows 200000 --sinks postgresql --durable
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import platform
import random
import resource
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.pgserver

from tests.pgserver import start_postgres

from skyfill.backfill.schema import RECORDS_SCHEMA, REPOS_SCHEMA
from skyfill.sinks.base import LoadScope
from skyfill.sinks.factory import open_sink

B32 = "abcdefghijklmnopqrstuvwxyz234567"
COLLECTIONS = (
    ("app.bsky.feed.like", 0.35),
    ("app.bsky.feed.post", 0.35),
    ("app.bsky.feed.repost", 0.1),
    ("app.bsky.graph.follow", 0.2),
)
BASE = datetime(2025, 1, 1, tzinfo=UTC)
JOB = "bench-2026-11-25-0000"


def _b32(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(B32) for _ in range(n))


def _record(rng: random.Random, collection: str, did: str, when: str, salt: str) -> str:
    """About 300 bytes of atproto JSON on average, as the decoder writes it."""
    subject = f"at://did:plc:{_b32(rng, 24)}/app.bsky.feed.post/3l{_b32(rng, 11)}"
    strong = {"uri": subject, "cid": "bafyrei" + _b32(rng, 52)}
    value: dict
    if collection == "app.bsky.feed.post":
        words = rng.randrange(20, 60)
        text = " ".join(
            rng.choice(("sky", "fill", "atproto", "hello", "data")) for _ in range(words)
        )
        value = {"$type": collection, "text": f"{text} {salt}", "createdAt": when, "langs": ["en"]}
        if rng.random() < 0.4:
            value["reply"] = {"root": strong, "parent": strong}
    elif collection == "app.bsky.graph.follow":
        value = {"$type": collection, "subject": f"did:plc:{_b32(rng, 24)}", "createdAt": when}
    else:
        value = {"$type": collection, "subject": strong, "createdAt": when}
        if rng.random() < 0.5:
            value["via"] = strong
    if salt and collection != "app.bsky.feed.post":
        value["note"] = salt
    return json.dumps(value, separators=(",", ":"))


def generate(path: Path, rows: int, per_did: int, batch_rows: int, changed: bool) -> int:
    """Write the records file; with `changed`, every tenth row differs. Returns DIDs."""
    rng = random.Random(42)
    dids = max(1, rows // per_did)
    names = sorted(f"did:plc:{_b32(rng, 24)}" for _ in range(dids))
    writer = pq.ParquetWriter(path, RECORDS_SCHEMA, compression="zstd")
    columns: dict[str, list] = {name: [] for name in RECORDS_SCHEMA.names}
    index = 0
    for d, did in enumerate(names):
        count = per_did if d < dids - 1 else rows - per_did * (dids - 1)
        picks = sorted(
            (rng.choices([c for c, _ in COLLECTIONS], [w for _, w in COLLECTIONS])[0], i)
            for i in range(count)
        )
        for collection, i in picks:
            rkey = f"3l{d % 1000:03d}{i:08d}"
            when_dt = BASE + timedelta(seconds=rng.randrange(300 * 86400))
            when = when_dt.isoformat().replace("+00:00", "Z")
            change = changed and index % 10 == 0
            salt = "edited" if change else ""
            columns["did"].append(did)
            columns["collection"].append(collection)
            columns["rkey"].append(rkey)
            columns["uri"].append(f"at://{did}/{collection}/{rkey}")
            columns["cid"].append("bafyrei" + ("x" if change else "a") + _b32(rng, 51))
            columns["rev"].append("3m2rev" + ("b" if change else "a") + "aaaaaa")
            columns["created_at"].append(when_dt)
            columns["record"].append(_record(rng, collection, did, when, salt))
            columns["job_id"].append(JOB)
            index += 1
            if len(columns["did"]) >= batch_rows:
                writer.write_batch(pa.RecordBatch.from_pydict(columns, schema=RECORDS_SCHEMA))
                columns = {name: [] for name in RECORDS_SCHEMA.names}
    if columns["did"]:
        writer.write_batch(pa.RecordBatch.from_pydict(columns, schema=RECORDS_SCHEMA))
    writer.close()
    repos = {
        "did": names,
        "handle": [f"u{i}.bsky.social" for i in range(dids)],
        "pds": ["https://pds.example"] * dids,
        "status": ["ok"] * dids,
        "rev": ["3m2reva"] * dids,
        "commit_cid": ["bafyreicommit"] * dids,
        "record_count": [per_did] * dids,
        "car_bytes": [per_did * 400] * dids,
        "attempts": [1] * dids,
        "error": [None] * dids,
        "fetched_at": [BASE] * dids,
    }
    pq.write_table(pa.table(repos, schema=REPOS_SCHEMA), path.with_suffix(".repos.parquet"))
    return dids


def reader(path: Path, batch_rows: int) -> pa.RecordBatchReader:
    """The file's batches, one row group at a time, as the aggregator reads (a reader over
    all row groups would buffer the whole file)."""
    file = pq.ParquetFile(path)

    def batches():
        for group in range(file.metadata.num_row_groups):
            yield from file.iter_batches(batch_size=batch_rows, row_groups=[group])

    return pa.RecordBatchReader.from_batches(file.schema_arrow, batches())


def load(url: str, tmp: Path, records: Path, batch_rows: int) -> tuple[float, dict, dict]:
    sink = open_sink(url, output=tmp / "unused", scope=LoadScope())
    started = time.perf_counter()
    facts = sink.write(
        reader(records, batch_rows), reader(records.with_suffix(".repos.parquet"), batch_rows)
    )
    seconds = time.perf_counter() - started
    return seconds, facts["sink"]["records"], facts["sink"]["seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--per-did", type=int, default=100, help="records per DID")
    parser.add_argument("--batch-rows", type=int, default=65_536)
    parser.add_argument("--sinks", default="postgresql,sqlite")
    parser.add_argument("--durable", action="store_true", help="PostgreSQL with fsync on")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="skyfill-sinkbench-", dir=args.tmp))
    try:
        started = time.perf_counter()
        original, changed = work / "records.parquet", work / "changed.parquet"
        # In another process, so that this one's peak RSS is the loads' alone.
        with concurrent.futures.ProcessPoolExecutor(1) as pool:
            dids = pool.submit(
                generate, original, args.rows, args.per_did, args.batch_rows, False
            ).result()
            pool.submit(generate, changed, args.rows, args.per_did, args.batch_rows, True).result()
        size = pq.ParquetFile(original).metadata
        sample = pq.ParquetFile(original).read_row_group(0, columns=["record"]).column(0)
        avg = sum(len(text) for text in sample.to_pylist()) // len(sample)
        print(
            f"generated {size.num_rows} rows of {dids} DIDs (record JSON ~{avg} bytes on average) "
            f"in {time.perf_counter() - started:.1f}s; {platform.node()}, "
            f"{platform.processor() or platform.machine()}, python {platform.python_version()}"
        )
        for kind in args.sinks.split(","):
            run_sink(kind, work, original, changed, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of the loading process: {peak:.0f} MB")


def run_sink(kind: str, work: Path, original: Path, changed: Path, args) -> None:
    server = None
    if kind == "postgresql":
        durable = {"fsync": "on", "synchronous_commit": "on", "full_page_writes": "on"}
        server = start_postgres(durable if args.durable else None)
        url = server.create_database("bench")
        label = "postgresql" + (" (durable)" if args.durable else " (fsync off)")
    else:
        url, label = f"sqlite:///{work}/bench.db", "sqlite"
    try:
        rows = args.rows
        expectations = {
            "first": (original, {"inserted": rows}),
            "replay": (original, {"unchanged": rows}),
            "changed": (
                changed,
                {"updated": (rows + 9) // 10, "unchanged": rows - (rows + 9) // 10},
            ),
        }
        for name, (path, expected) in expectations.items():
            seconds, counts, steps = load(url, work, path, args.batch_rows)
            wrong = {k: (counts[k], v) for k, v in expected.items() if counts[k] != v}
            status = "ok" if not wrong else f"WRONG {wrong}"
            print(
                f"{label:<24} {name:<8} {rows / seconds:>10,.0f} rows/s  {seconds:6.1f}s  "
                f"inserted={counts['inserted']} updated={counts['updated']} "
                f"unchanged={counts['unchanged']} deleted={counts['deleted']}  {status}\n"
                f"{'':<24} steps: {json.dumps(steps)}",
                flush=True,
            )
    finally:
        if server is not None:
            server.stop()


if __name__ == "__main__":
    main()

"""The short summary printed when a job completes."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import orjson
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyfill.engine import replica
from skyfill.engine.layout import JobLayout
from skyfill.engine.state.base import JobRecord

_DID = re.compile(r"did:[a-z]+:[A-Za-z0-9._:%-]+")
TOP_ERRORS = 3


def summarize(layout: JobLayout, job: JobRecord, started: float) -> str:
    output = layout.output
    if job.job_type != "backfill":
        return f"job {job.job_id} ({job.job_type}): {job.status}\n  output: {_show(output)}"
    repos = pq.read_table(output / "repos.parquet", columns=["status", "error"])
    statuses = pc.value_counts(repos["status"]).to_pylist()
    counts = _records_per_collection(layout)
    total = sum(counts.values())
    elapsed = max(time.monotonic() - started, 1e-9)
    lines = [
        f"job {job.job_id}: {job.status}, {job.item_count} DIDs, {total} records "
        f"(this run: {elapsed:.1f}s)",
        "  DIDs by status: "
        + ", ".join(
            f"{s['values']}={s['counts']}" for s in sorted(statuses, key=lambda s: -s["counts"])
        ),
    ]
    lines += _top_errors(repos.column("status").to_pylist(), repos.column("error").to_pylist())
    lines.append(f"  records: {total}")
    for collection, count in counts.most_common():
        lines.append(f"    {collection:<32} {count}")
    lines.append(f"  output: {_show(output)}")
    return "\n".join(lines)


def _top_errors(statuses: list[str], errors: list[str | None]) -> list[str]:
    """The most common reasons DIDs did not end `ok`, with DIDs masked so they group."""
    reasons = Counter(
        f"{status}: {_DID.sub('<did>', error)}"
        for status, error in zip(statuses, errors, strict=True)
        if error and status in ("failed", "invalid_repo")
    )
    return [f"  {count} x {reason}" for reason, count in reasons.most_common(TOP_ERRORS)]


def _records_per_collection(layout: JobLayout) -> Counter[str]:
    """Rows per collection, from the aggregation manifest's description of the output files
    (written and counted once by the sink; no need to scan the dataset again)."""
    replica.refresh(layout.aggregation / "manifest.json")
    manifest = orjson.loads((layout.aggregation / "manifest.json").read_bytes())
    counts: Counter[str] = Counter()
    for described in manifest["output_files"]:
        partition = (
            described["file"].split("/")[1] if described["file"].startswith("records/") else ""
        )
        if partition.startswith("collection="):
            counts[partition.removeprefix("collection=")] += described["rows"]
    return counts


def _show(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)

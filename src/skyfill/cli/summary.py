"""The short summary printed when a job completes."""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path

import orjson

from skyfill.engine.layout import JobLayout
from skyfill.engine.state.base import JobRecord, StateStore
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.errors import Outcome
from skyfill.monitor.discovery import discovery_report, summary_lines
from skyfill.storage import replica

_DID = re.compile(r"did:[a-z]+:[A-Za-z0-9._:%-]+")
TOP_ERRORS = 3


def summarize(
    layout: JobLayout, job: JobRecord, started: float, store: StateStore | None = None
) -> str:
    """The end-of-run summary; the job's state from `store`, else from its SQLite file."""
    if store is None:
        local = SqliteStateStore(layout.state_db)
        try:
            return summarize(layout, job, started, local)
        finally:
            local.close()
    output = layout.output
    if job.job_type != "backfill":
        return f"job {job.job_id} ({job.job_type}): {job.status}\n  output: {_show(output)}"
    replica.refresh(layout.aggregation / "manifest.json")
    manifest = orjson.loads((layout.aggregation / "manifest.json").read_bytes())
    sink = manifest.get("sink", {"kind": "parquet"})
    statuses, errors = _outcomes(store, manifest)
    counts = records_per_collection(manifest)
    total = sum(counts.values())
    elapsed = max(time.monotonic() - started, 1e-9)
    lines = [
        f"job {job.job_id}: {job.status}, {job.item_count} DIDs, {total} records "
        f"(this run: {elapsed:.1f}s)",
        "  DIDs by status: "
        + ", ".join(f"{status}={count}" for status, count in statuses.most_common()),
    ]
    lines += _top_errors(errors)
    discovery = discovery_report(store)
    if discovery is not None:
        lines += summary_lines(discovery)
    if job.config.get("previous"):
        unchanged = sum(1 for item in store.iter_items() if item.data.get("unchanged"))
        lines.append(
            f"  refresh: {unchanged} repos unchanged since the previous job (not fetched), "
            f"{job.item_count - unchanged} fetched or settled"
        )
    lines.append(f"  records: {total}")
    for collection, count in counts.most_common():
        lines.append(f"    {collection:<32} {count}")
    if sink["kind"] == "parquet":
        lines.append(f"  output: {_show(output)}")
    elif sink["kind"] == "kafka":
        sent = sink["published"]
        lines.append(f"  output: kafka {sink['target']}")
        lines.append(
            f"  published: {sent['records']} record messages, {sent['repos']} repos "
            "messages (acknowledged by the broker)"
        )
    else:
        lines.append(f"  output: {sink['kind']} {sink['target']} (tables records, repos)")
        loaded = sink["records"]
        lines.append(
            f"  loaded records: {loaded['inserted']} inserted, {loaded['updated']} updated, "
            f"{loaded['deleted']} deleted, {loaded['unchanged']} unchanged"
        )
    return "\n".join(lines)


def _outcomes(store: StateStore, manifest: dict) -> tuple[Counter[str], list[tuple[str, str]]]:
    """DIDs per status, and (status, error) of the DIDs that failed or were invalid: from
    the state store, which every sink's repos rows come from (only those DIDs are read)."""
    statuses = Counter(manifest.get("repos_by_status") or store.status_counts())
    failing = [s for s in (Outcome.FAILED, Outcome.INVALID_REPO) if statuses.get(s)]
    errors: list[tuple[str, str]] = [
        (item.status, item.error)
        for item in (store.items_with_status(failing) if failing else ())
        if item.error
    ]
    return statuses, errors


def _top_errors(errors: list[tuple[str, str]]) -> list[str]:
    """The most common reasons DIDs did not end `ok`, with DIDs masked so they group."""
    reasons = Counter(f"{status}: {_DID.sub('<did>', error)}" for status, error in errors)
    return [f"  {count} x {reason}" for reason, count in reasons.most_common(TOP_ERRORS)]


def records_per_collection(manifest: dict) -> Counter[str]:
    """Rows per collection, from the aggregation manifest (counted once while the sink
    wrote them; older manifests: from the description of the output files)."""
    if "records_by_collection" in manifest:
        return Counter(manifest["records_by_collection"])
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

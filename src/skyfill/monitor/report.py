"""`skyfill report`: the evaluation of one job, as JSON numbers or a self-contained HTML page.

Where each number comes from:

- outcomes, error types, retries per phase, repo sizes, requests and bytes per PDS,
  workers' share: the state store (per-DID outcomes and metrics, tasks) - every run;
- throughput over time: the recorded timeline (`StateStore.samples`);
- latency per host (p50/p95/p99), requests/429s/bytes per host including the PLC
  directory: the handler statistics last published - the last run;
- records per collection: the final dataset's aggregation manifest once the job has
  completed, else the handler statistics (`source` says which);
- discovery (hosts listed, not listed, failed; relays): the position discovery saved
  (null for a job without --from-host/--from-relay).
"""

from __future__ import annotations

import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from skyfill.engine.layout import JobLayout
from skyfill.engine.model import ItemStatus
from skyfill.engine.state.base import StateStore
from skyfill.monitor.discovery import discovery_report
from skyfill.monitor.series import series
from skyfill.monitor.snapshot import published_stats, workers_of
from skyfill.telemetry.histogram import LatencyHistogram

_DID = re.compile(r"did:[a-z]+:[A-Za-z0-9._:%-]+")
TOP_ERRORS = 10
SIZE_BINS = 12


def build_report(store: StateStore, layout: JobLayout | None) -> dict[str, Any]:
    """Every number of the report, as plain JSON values."""
    job = store.job()
    if job is None:
        return {"job": {"job_id": layout.job_id if layout else None, "status": "planning"}}
    items = list(store.iter_items())
    stats = published_stats(store)
    samples = store.samples()
    points = series(samples)
    return {
        "generated_at": time.time(),
        "job": {
            "job_id": job.job_id,
            "job_type": job.job_type,
            "status": str(job.status),
            "phase": job.phase,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "items": job.item_count,
            "wall_seconds": round(job.updated_at - job.created_at, 3),
            "signatures_verified": job.config.get("verify_signatures"),
        },
        "outcomes": _outcomes(store, items),
        "throughput": _throughput(points, samples),
        "latency": _latency(stats),
        "retries": _retries(store, items),
        "records": _records(layout, stats, items),
        "repo_sizes": repo_size_histogram(
            [int(i.data["car_bytes"]) for i in items if i.data.get("car_bytes") is not None]
        ),
        "cost": _cost(stats, items),
        "workers": _workers(store, samples),
        "discovery": discovery_report(store),
    }


def _outcomes(store: StateStore, items: list) -> dict[str, Any]:
    reasons = Counter(
        f"{i.status}: {_DID.sub('<did>', i.error)}"
        for i in items
        if i.error and i.status not in (ItemStatus.OK, ItemStatus.PENDING)
    )
    return {
        "by_status": dict(sorted(store.status_counts().items())),
        "error_classes": dict(Counter(i.error_class for i in items if i.error_class).most_common()),
        "top_errors": [{"reason": r, "count": n} for r, n in reasons.most_common(TOP_ERRORS)],
        # an incremental refresh: items unchanged since the previous job, not fetched
        "unchanged": sum(1 for i in items if i.data.get("unchanged")),
    }


def _throughput(points: list[dict[str, Any]], samples: list[dict[str, Any]]) -> dict[str, Any]:
    if len(samples) < 2:
        return {"series": points, "samples": len(samples)}
    span = max(samples[-1]["t"] - samples[0]["t"], 1e-9)
    last = points[-1]
    return {
        "samples": len(samples),
        "runs": len({s.get("run") for s in samples}),
        "dids_per_s_avg": round((last["done"] - points[0]["done"]) / span, 3),
        "records_per_s_avg": round((last["records"] - points[0]["records"]) / span, 3),
        "dids_per_s_peak": max(p.get("dids_per_s", 0) for p in points),
        "series": [
            {
                key: p.get(key)
                for key in (
                    "elapsed_s",
                    "phase",
                    "done",
                    "records",
                    "requests",
                    "rate_limited",
                    "bytes",
                    "dids_per_s",
                    "records_per_s",
                    "requests_per_s",
                )
            }
            for p in points
        ],
    }


def _latency(stats: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for host, h in sorted((stats.get("hosts") or {}).items()):
        summary = LatencyHistogram.from_dict(h.get("latency")).summary()
        out[host] = {
            "requests": h.get("requests", 0),
            "answered": summary["count"],
            **{f"{k}_ms": _ms(v) for k, v in summary.items() if k != "count"},
        }
    return out


def _retries(store: StateStore, items: list) -> dict[str, Any]:
    phases: dict[str, dict[str, Any]] = {}
    for task in store.tasks():
        phase = phases.setdefault(
            task.phase, {"phase": task.phase, "tasks": 0, "dids_planned": 0, "dids_settled": 0}
        )
        phase["tasks"] += 1
        phase["dids_planned"] += len(store.batch_items(task.batch_id))
        phase["dids_settled"] += int(store.task_item_metrics(task.task_id)["items_processed"])
    attempts = Counter(i.attempts for i in items if i.status != ItemStatus.PENDING)
    return {
        "phases": list(phases.values()),
        "attempts": {str(k): v for k, v in sorted(attempts.items())},
        "dids_retried": sum(n for k, n in attempts.items() if k > 1),
        "extra_tries": sum((k - 1) * n for k, n in attempts.items() if k > 1),
    }


def _records(layout: JobLayout | None, stats: dict[str, Any], items: list) -> dict[str, Any]:
    from_state = int(sum(i.metrics.get("records", 0) for i in items))
    manifest = layout.aggregation / "manifest.json" if layout is not None else None
    if manifest is not None and manifest.exists():
        counts: Counter[str] = Counter()
        for described in orjson.loads(manifest.read_bytes()).get("output_files", []):
            parts = described["file"].split("/")
            if parts[0] == "records" and parts[1].startswith("collection="):
                counts[parts[1].removeprefix("collection=")] += described["rows"]
        return {
            "source": "dataset",
            "total": sum(counts.values()),
            "by_collection": dict(counts.most_common()),
            "decoded_all_runs": from_state,
        }
    by_collection = stats.get("records_by_collection") or {}
    return {
        "source": "last run",
        "total": sum(by_collection.values()),
        "by_collection": dict(sorted(by_collection.items(), key=lambda kv: -kv[1])),
        "decoded_all_runs": from_state,
    }


def repo_size_histogram(sizes: list[int], bins: int = SIZE_BINS) -> dict[str, Any]:
    """Repo CAR sizes in log-spaced bins (powers of 2 grouped to at most `bins`)."""
    if not sizes:
        return {"count": 0, "bins": []}
    ordered = sorted(sizes)
    low = max(ordered[0], 1).bit_length() - 1
    high = max(ordered[-1], 1).bit_length()
    step = max(1, -(-(high - low) // bins))
    edges = list(range(low, high + step, step))
    counts = [0] * (len(edges) - 1)
    for size in ordered:
        exp = max(size, 1).bit_length() - 1
        counts[min((exp - low) // step, len(counts) - 1)] += 1
    return {
        "count": len(ordered),
        "total_bytes": sum(ordered),
        "min": ordered[0],
        "p50": ordered[len(ordered) // 2],
        "p95": ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))],
        "max": ordered[-1],
        "bins": [
            {"from": 2 ** edges[i], "to": 2 ** edges[i + 1], "count": counts[i]}
            for i in range(len(counts))
        ],
    }


def _cost(stats: dict[str, Any], items: list) -> dict[str, Any]:
    per_pds: dict[str, dict[str, float]] = {}
    for i in items:
        if i.status == ItemStatus.PENDING:
            continue
        row = per_pds.setdefault(
            i.data.get("pds") or "(unresolved)", {"dids": 0, "requests": 0, "bytes": 0}
        )
        row["dids"] += 1
        row["requests"] += i.metrics.get("api_requests", 0)
        row["bytes"] += i.metrics.get("bytes", 0)
    hosts = [
        {
            "host": name,
            "requests": h.get("requests", 0),
            "bytes": h.get("bytes", 0),
            "rate_limited": h.get("rate_limited", 0),
            "wait_seconds": h.get("wait_seconds", 0.0),
        }
        for name, h in sorted((stats.get("hosts") or {}).items())
    ]
    return {
        "per_pds": [
            {"pds": pds, **{k: int(v) for k, v in row.items()}}
            for pds, row in sorted(per_pds.items(), key=lambda kv: -kv[1]["requests"])
        ],
        "per_host_last_run": sorted(hosts, key=lambda h: -h["requests"]),
        "requests": int(sum(r["requests"] for r in per_pds.values())),
        "bytes": int(sum(r["bytes"] for r in per_pds.values())),
    }


def _workers(store: StateStore, samples: list[dict[str, Any]]) -> dict[str, Any]:
    tasks = []
    for task in store.tasks():
        info = store.task_info(task.task_id)
        metrics = store.task_item_metrics(task.task_id)
        started, finished = info.get("started_at"), info.get("finished_at")
        tasks.append(
            {
                "task_id": task.task_id,
                "phase": task.phase,
                "status": str(task.status),
                "dids": int(metrics["items_processed"]),
                "rows": int(metrics["rows"]),
                "seconds": round(finished - started, 3) if started and finished else None,
            }
        )
    settled = sum(t["dids"] for t in tasks) or 1
    for t in tasks:
        t["share"] = round(t["dids"] / settled, 4)
    runs: dict[str, dict[str, Any]] = {}
    for s in samples:
        run = runs.setdefault(
            s.get("run") or "?", {"run": s.get("run"), "from": s["t"], "dids": 0, "records": 0}
        )
        run["to"] = s["t"]
        run["dids"] = max(run["dids"], int(s.get("dids") or 0))
        run["records"] = max(run["records"], int(s.get("records") or 0))
    return {
        "tasks": tasks,
        "runs": list(runs.values()),
        "workers": workers_of(store),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)


def write_report(report: dict[str, Any], fmt: str, output: Path | None) -> str:
    """The report as `fmt` (json or html), written to `output` (None: returned only)."""
    if fmt == "json":
        text = orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n"
    else:
        from skyfill.monitor.report_html import render_report

        text = render_report(report)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        tmp = output.with_name(output.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(output)
    return text

"""What a job looks like right now, read from its state store alone (any backend, any
machine): the facts behind `skyfill monitor`, the dashboard and the metrics exporter.

Counters of the current run (requests, records, per-host latency...) come from the
statistics the runner publishes (`put_stats("handler")`, every ~2 s); with distributed
workers (a store that has `workers()`), each worker's published statistics
(`handler:<worker_id>`) are added up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from skyfill.engine.lifecycle import is_live
from skyfill.engine.model import ItemStatus, TaskStatus
from skyfill.engine.state.base import StateStore
from skyfill.monitor.progress import top_hosts
from skyfill.telemetry.histogram import LatencyHistogram

RECENT_SECONDS = 30.0
SILENT_AFTER = 5.0
"""A runner that has not beaten its heartbeat for this long (it beats every 0.5 s) is
shown as silent."""
_SUMMED_HOST_KEYS = (
    "requests",
    "rate_limited",
    "errors",
    "no_answer",
    "bytes",
    "wait_seconds",
    "in_flight",
    "waiting",
    "rate_per_s",
)


def workers_of(store: StateStore) -> list[dict[str, Any]] | None:
    """`store.workers()` where the backend has it (distributed workers), else None."""
    method: Callable[[], Iterable[dict[str, Any]]] | None = getattr(store, "workers", None)
    return list(method()) if callable(method) else None


def published_stats(store: StateStore) -> dict[str, Any]:
    """The handler statistics published for the job, added up over workers if several."""
    parts = [store.get_stats("handler")]
    for worker in workers_of(store) or []:
        parts.append(store.get_stats(f"handler:{worker.get('worker_id')}"))
    return merge_stats([p for p in parts if p])


def merge_stats(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Add up handler statistics: per-host counters and latency histograms, totals, records
    per collection, memory (RSS summed, peak the highest)."""
    if len(parts) == 1:
        return parts[0]
    merged: dict[str, Any] = {"hosts": {}, "totals": {}, "records_by_collection": {}}
    for part in parts:
        for name, host in (part.get("hosts") or {}).items():
            into = merged["hosts"].setdefault(name, {"by_status": {}})
            for key in _SUMMED_HOST_KEYS:
                into[key] = into.get(key, 0) + (host.get(key) or 0)
            for code, n in (host.get("by_status") or {}).items():
                into["by_status"][code] = into["by_status"].get(code, 0) + n
            hist = LatencyHistogram.from_dict(into.get("latency"))
            hist.merge(LatencyHistogram.from_dict(host.get("latency")))
            into["latency"] = hist.to_dict()
            into.update({f"{q}_ms": _ms(v) for q, v in hist.summary().items() if q[0] == "p"})
        for key, value in (part.get("totals") or {}).items():
            merged["totals"][key] = merged["totals"].get(key, 0) + value
        for key, value in (part.get("records_by_collection") or {}).items():
            merged["records_by_collection"][key] = (
                merged["records_by_collection"].get(key, 0) + value
            )
        for key in ("dids", "retries", "records"):
            merged[key] = merged.get(key, 0) + (part.get(key) or 0)
        memory = part.get("memory") or {}
        into_memory = merged.setdefault("memory", {"rss": 0, "peak_rss": 0})
        into_memory["rss"] += memory.get("rss") or 0
        into_memory["peak_rss"] = max(into_memory["peak_rss"], memory.get("peak_rss") or 0)
    return merged


def host_rows(hosts: dict[str, dict]) -> list[dict[str, Any]]:
    """One row per host, busiest first."""
    rows = []
    for name, h in hosts.items():
        rows.append(
            {
                "host": name,
                "requests": h.get("requests", 0),
                "rate_limited": h.get("rate_limited", 0),
                "errors": h.get("errors", 0),
                "bytes": h.get("bytes", 0),
                "wait_seconds": h.get("wait_seconds", 0.0),
                "rate_per_s": h.get("rate_per_s"),
                "in_flight": h.get("in_flight", 0),
                "p50_ms": h.get("p50_ms"),
                "p95_ms": h.get("p95_ms"),
                "p99_ms": h.get("p99_ms"),
                "by_status": h.get("by_status", {}),
            }
        )
    return sorted(rows, key=lambda r: (-r["requests"], r["host"]))


def job_snapshot(store: StateStore) -> dict[str, Any]:
    """The job's facts now (see the module docstring). `{"job_id": None}` when unplanned."""
    job = store.job()
    if job is None:
        return {"job_id": None, "status": "planning"}
    now = time.time()
    counts = store.status_counts()
    pending = counts.get(ItemStatus.PENDING, 0)
    done = job.item_count - pending
    live = is_live(job, stale_after=SILENT_AFTER)
    running = str(job.status) in ("running", "aggregating")
    window = max(1.0, min(RECENT_SECONDS, now - job.created_at))
    recent = store.completions_since(now - window) / window if running else 0.0
    age = now - job.heartbeat_at if job.heartbeat_at else None
    ended = now if running else job.updated_at
    average = done / max(ended - job.created_at, 1.0) if done else 0.0
    stats = published_stats(store)
    totals = stats.get("totals") or {}
    last = store.samples(last=8)
    tasks = store.task_status_counts()
    workers = workers_of(store)
    facts: dict[str, Any] = {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "status": str(job.status),
        "phase": job.phase,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "total": job.item_count,
        "done": done,
        "pending": pending,
        "by_status": {k: v for k, v in sorted(counts.items()) if k != ItemStatus.PENDING},
        "tasks": {"total": sum(tasks.values()), **tasks},
        "dids_per_s": round(average, 2),
        "dids_per_s_recent": round(recent, 2),
        "eta_s": round(pending / recent, 1) if recent > 0 and pending else None,
        "records": stats.get("records", 0),
        "records_per_s_recent": _recent_rate(last, "records", now) if running else 0.0,
        "records_by_collection": stats.get("records_by_collection", {}),
        "retries": stats.get("retries", 0),
        "requests": totals.get("requests", 0),
        "rate_limited": totals.get("rate_limited", 0),
        "bytes": totals.get("bytes", 0),
        "wait_seconds": totals.get("wait_seconds", 0.0),
        "rss": (stats.get("memory") or {}).get("rss"),
        "memory": stats.get("memory") or {},
        "runner": {
            "runner": job.runner,
            "heartbeat_at": job.heartbeat_at,
            "heartbeat_age_s": round(age, 1) if age is not None else None,
            "live": live,
            "silent": running and not live,
        },
        "hosts": host_rows(stats.get("hosts") or {}),
        **top_hosts(stats.get("hosts") or {}),
    }
    facts["workers"] = workers if workers is not None else [_single_runner(facts, store)]
    facts["distributed"] = workers is not None
    return facts


def _single_runner(facts: dict[str, Any], store: StateStore) -> dict[str, Any]:
    """The one runner of a job without distributed workers, as a row of the workers table."""
    runner = facts["runner"]
    running = store.tasks(status=TaskStatus.RUNNING) if runner["live"] else []
    running_tasks = [t.task_id for t in running]
    return {
        "worker_id": runner["runner"],
        "heartbeat_at": runner["heartbeat_at"],
        "current_task": ", ".join(running_tasks[:3]) + (" ..." if len(running_tasks) > 3 else ""),
        "items_done": facts["done"],
        "live": runner["live"],
    }


def _recent_rate(samples: list[dict[str, Any]], counter: str, now: float) -> float:
    """Per second, over the newest samples of the newest run (within RECENT_SECONDS)."""
    if not samples or now - samples[-1]["t"] > 2 * RECENT_SECONDS:
        return 0.0
    run = samples[-1].get("run")
    same = [s for s in samples if s.get("run") == run and s["t"] >= now - RECENT_SECONDS * 2]
    if len(same) < 2:
        return 0.0
    first, last = same[0], same[-1]
    span = last["t"] - first["t"]
    return round((last.get(counter, 0) - first.get(counter, 0)) / span, 1) if span > 0 else 0.0


def _ms(seconds: float | int | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 2)

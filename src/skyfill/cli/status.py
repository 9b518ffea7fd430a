"""`skyfill status`: the facts of one job, from its state store, as JSON or text."""

from __future__ import annotations

import time
from typing import Any

from skyfill.engine.lifecycle import is_live
from skyfill.engine.model import ItemStatus
from skyfill.engine.state.base import StateStore

RECENT_SECONDS = 60.0
HOSTS_SHOWN = 10


def job_status(store: StateStore) -> dict[str, Any]:
    job = store.job()
    if job is None:
        return {"job_id": None, "status": "planning", "phase": None, "items": 0, "done": 0}
    counts = store.status_counts()
    pending = counts.get(ItemStatus.PENDING, 0)
    done = job.item_count - pending
    live = is_live(job)
    recent = store.completions_since(time.time() - RECENT_SECONDS) / RECENT_SECONDS
    tasks = store.task_status_counts()
    return {
        "job_id": job.job_id,
        "job_type": job.job_type,
        "status": str(job.status),
        "phase": job.phase,
        "live": live,
        "heartbeat_age_s": round(time.time() - job.heartbeat_at, 1) if job.heartbeat_at else None,
        "items": job.item_count,
        "done": done,
        "pending": pending,
        "by_status": {k: v for k, v in sorted(counts.items()) if k != ItemStatus.PENDING},
        "tasks": {
            "total": sum(tasks.values()),
            **{k: tasks.get(k, 0) for k in ("done", "running", "pending", "failed")},
        },
        "throughput_per_s": round(recent, 2) if live else 0.0,
        "eta_s": round(pending / recent, 1) if live and recent > 0 else None,
        **store.get_stats("handler"),
        **_distributed(store),
    }


def _distributed(store: StateStore) -> dict[str, Any]:
    """Worker nodes (Redis state store): each one's heartbeat, and their hosts' counters
    summed."""
    workers = getattr(store, "workers", None)
    if workers is None:
        return {}
    now = time.time()
    rows, hosts = [], {}
    for w in workers():
        age = now - w["heartbeat_at"]
        state = w.get("state", "?")
        if state != "stopped" and not w.get("live"):
            state = "silent"
        rows.append(
            {
                "worker_id": w["worker_id"],
                "state": state,
                "heartbeat_age_s": round(age, 1),
                "tasks": w.get("tasks", []),
                "tasks_done": w.get("tasks_done", 0),
            }
        )
        for host, h in store.get_stats(f"handler:{w['worker_id']}").get("hosts", {}).items():
            total = hosts.setdefault(
                host, {**h, "requests": 0, "rate_limited": 0, "wait_seconds": 0.0}
            )
            total["requests"] += h["requests"]
            total["rate_limited"] += h["rate_limited"]
            total["wait_seconds"] = round(total["wait_seconds"] + h["wait_seconds"], 3)
    return {"workers": rows, **({"hosts": hosts} if hosts else {})}


def render_status(facts: dict[str, Any]) -> str:
    live = "live" if facts.get("live") else "no worker running"
    tasks = facts.get("tasks", {})
    lines = [
        f"job {facts['job_id']}: {facts['status']} ({live}), phase {facts['phase']}",
        f"  DIDs: {facts['done']}/{facts['items']} done, {facts.get('pending', 0)} pending",
        f"  tasks: {tasks.get('done', 0)}/{tasks.get('total', 0)} done, "
        f"{tasks.get('running', 0)} running, {tasks.get('failed', 0)} failed",
    ]
    for name, count in facts.get("by_status", {}).items():
        lines.append(f"    {name:<14} {count}")
    hosts = facts.get("hosts") or {}
    if hosts:
        lines.append(f"  hosts ({len(hosts)}): requests, 429s, waited, rate now, in flight")
        busiest = sorted(hosts.items(), key=lambda kv: -kv[1]["requests"])[:HOSTS_SHOWN]
        for name, h in busiest:
            lines.append(
                f"    {name:<40} {h['requests']:>7} {h['rate_limited']:>5} "
                f"{h['wait_seconds']:>8.1f}s {h['rate_per_s']:>8.2f}/s {h['in_flight']:>3}"
            )
    workers = facts.get("workers") or []
    if workers:
        lines.append(f"  workers ({len(workers)}): state, heartbeat age, tasks done, current")
        for w in workers:
            lines.append(
                f"    {w['worker_id']:<30} {w['state']:<8} {w['heartbeat_age_s']:>6.1f}s "
                f"{w['tasks_done']:>5}  {' '.join(w['tasks'])}"
            )
    memory = facts.get("memory") or {}
    if memory.get("peak_rss"):
        limit = memory.get("limit")
        lines.append(
            f"  memory: peak RSS {memory['peak_rss'] / 2**20:.0f} MiB"
            + (f" (limit {limit / 2**20:.0f} MiB, {memory['waits']} waits)" if limit else "")
        )
    if facts.get("live"):
        eta = facts.get("eta_s")
        lines.append(
            f"  throughput: {facts['throughput_per_s']} DIDs/s (last minute), "
            f"ETA {'unknown' if eta is None else f'{eta:.0f} s'}"
        )
    return "\n".join(lines)

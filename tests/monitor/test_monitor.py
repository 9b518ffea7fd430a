"""`skyfill monitor` (and `status --json`) from another process, on SQLite and on Redis."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import redis

from skyfill.engine.model import Batch, ItemResult, Role, Task
from skyfill.engine.state.redis import RedisStateStore
from skyfill.engine.state.redis_keys import RedisKeys
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.monitor.dashboard import DashboardServer
from skyfill.monitor.redis_source import RedisSource
from skyfill.monitor.snapshot import job_snapshot
from skyfill.telemetry.histogram import LatencyHistogram
from tests.helpers import (
    Server,
    all_records,
    assert_one_line_error,
    job_dir,
    json_lines,
    repos,
    run_cli,
    run_job,
)
from tests.monitor.conftest import WatchedJob


def test_monitor_once_while_the_job_runs(watched: WatchedJob) -> None:
    live = watched.live_monitor
    assert live is not None, "no monitor frame was taken while the job ran"
    assert live["job_id"] == "watched" and live["status"] == "running"
    assert live["runner"]["live"] is True and live["runner"]["silent"] is False
    # the job was held still (SIGSTOP) while the command ran: its heartbeat aged by as long
    # as a command takes to start on this machine, so the bound is loose
    assert 0 <= live["runner"]["heartbeat_age_s"] < 60
    assert 0 <= live["done"] < live["total"] == watched.dids
    assert live["hosts"] and all(h["requests"] > 0 for h in live["hosts"])
    assert [w["worker_id"] for w in live["workers"]] == [live["runner"]["runner"]]
    assert live["distributed"] is False


def test_monitor_once_after_the_job(watched: WatchedJob) -> None:
    result = run_cli("monitor", "--workdir", str(watched.workdir), "--once", "--json")
    assert result.returncode == 0, result.stderr
    facts = json_lines(result.stdout)[0]
    outcomes = Counter(r["status"] for r in repos(watched.workdir, "watched").values())
    assert facts["status"] == "completed" and facts["done"] == watched.dids
    assert facts["by_status"] == dict(outcomes)
    assert facts["runner"]["live"] is False and facts["runner"]["silent"] is False
    assert facts["records"] == len(all_records(watched.workdir, "watched"))
    assert all(h["p50_ms"] <= h["p95_ms"] <= h["p99_ms"] for h in facts["hosts"])
    frame = run_cli("monitor", "watched", "--workdir", str(watched.workdir), "--once")
    assert frame.returncode == 0, frame.stderr
    assert f"{watched.dids}/{watched.dids} DIDs" in frame.stdout
    assert "hosts" in frame.stdout and "workers" in frame.stdout
    assert facts["hosts"][0]["host"] in frame.stdout


def test_status_json_has_the_live_statistics(watched: WatchedJob) -> None:
    result = run_cli("status", "watched", "--workdir", str(watched.workdir), "--json")
    assert result.returncode == 0, result.stderr
    facts = json.loads(result.stdout)
    assert facts["status"] == "completed" and facts["done"] == watched.dids
    assert sum(facts["records_by_collection"].values()) == len(
        all_records(watched.workdir, "watched")
    )
    assert facts["totals"]["requests"] == sum(h["requests"] for h in facts["hosts"].values())
    for host in facts["hosts"].values():
        assert host["p50_ms"] <= host["p99_ms"]
        assert LatencyHistogram.from_dict(host["latency"]).count == sum(host["by_status"].values())


def test_rich_progress_shows_the_facts(simnet: Server, tmp_path: Path) -> None:
    result = run_job(simnet, tmp_path, "rich", "--progress", "rich", "--log-level", "warning")
    assert result.returncode == 0, result.stderr
    dids = len(Path(simnet.ready["dids"]).read_text().split())
    for text in (f"{dids}/{dids} DIDs", "DIDs/s now", "records/s", "429s", "RSS", "busiest:"):
        assert text in result.stderr, (text, result.stderr)


# -- Redis ----------------------------------------------------------------------------------


def _host_stats(requests: int, latency: float) -> dict[str, Any]:
    hist = LatencyHistogram()
    for i in range(requests):
        hist.observe(latency * (1 + i % 3))
    return {
        "requests": requests,
        "by_status": {"200": requests - 1, "429": 1},
        "rate_limited": 1,
        "errors": 1,
        "bytes": requests * 1000,
        "wait_seconds": 1.5,
        "rate_per_s": 10.0,
        "in_flight": 0,
        "waiting": 0,
        "latency": hist.to_dict(),
        "p50_ms": 1000 * (hist.quantile(0.5) or 0),
        "p95_ms": 1000 * (hist.quantile(0.95) or 0),
        "p99_ms": 1000 * (hist.quantile(0.99) or 0),
    }


def _redis_job(url: str) -> str:
    """A job half done in Redis, as a runner on another machine leaves it."""
    job_id = f"rjob-{uuid.uuid4().hex[:6]}"
    store = RedisStateStore.from_url(url, job_id)
    try:
        items = [f"did:plc:{i:04d}" for i in range(10)]
        store.create_job(
            job_id,
            "backfill",
            "skyfill.backfill.handler:BackfillHandler",
            {},
            [Batch("batch-0000", "backfill", "initial_batch", tuple(items))],
            [Task("task-0000", "batch-0000", Role.WORKER, "backfill", "initial_batch")],
        )
        store.start_task("task-0000")
        results = [ItemResult(d, "ok", data={"pds": "https://pds.example"}) for d in items[:6]]
        results.append(ItemResult(items[6], "not_found", "not_found", "gone"))
        store.commit_items("task-0000", results, [5] * 6 + [0], None)
        hosts = {"pds.example": _host_stats(20, 0.05), "plc.example": _host_stats(10, 0.01)}
        store.put_stats("handler", {"hosts": hosts, "records": 30, "retries": 2})
        store.append_sample({"t": time.time() - 4, "run": "far:1", "items": {"pending": 10}})
        store.append_sample({"run": "far:1", "items": store.status_counts(), "records": 30})
        store.heartbeat("far-away-host:4242")
    finally:
        store.close()
    return job_id


def test_monitor_once_on_redis(redis_url: str) -> None:
    job_id = _redis_job(redis_url)
    # A runner on another machine is live while its heartbeat is fresh: read at once, in
    # process, the milliseconds since it beat are far from SILENT_AFTER (a command's
    # start-up on a loaded machine might not be).
    store = RedisStateStore.from_url(redis_url, job_id)
    try:
        runner = job_snapshot(store)["runner"]
    finally:
        store.close()
    assert runner["runner"] == "far-away-host:4242"
    assert runner["live"] is True and runner["silent"] is False
    result = run_cli("monitor", job_id, "--state", redis_url, "--once", "--json")
    assert result.returncode == 0, result.stderr
    facts = json_lines(result.stdout)[0]
    assert facts["job_id"] == job_id and facts["status"] == "running"
    assert (facts["done"], facts["pending"], facts["total"]) == (7, 3, 10)
    assert facts["by_status"] == {"ok": 6, "not_found": 1}
    assert facts["runner"]["runner"] == "far-away-host:4242"
    assert [h["host"] for h in facts["hosts"]] == ["pds.example", "plc.example"]
    pds, plc = facts["hosts"]
    assert pds["rate_limited"] == 1 and pds["p95_ms"] > plc["p95_ms"] > 0
    assert facts["records"] == 30 and facts["retries"] == 2
    frame = run_cli("monitor", job_id, "--state", redis_url, "--once")
    assert frame.returncode == 0, frame.stderr
    assert "7/10 DIDs" in frame.stdout and "pds.example" in frame.stdout

    # The runner goes silent: its heartbeat stops.
    client = redis.Redis.from_url(redis_url)
    client.hset(RedisKeys(job_id).job, "heartbeat_at", time.time() - 60)
    client.close()
    silent = json_lines(run_cli("monitor", job_id, "--state", redis_url, "--once", "--json").stdout)
    assert silent[0]["runner"]["silent"] is True and silent[0]["runner"]["live"] is False
    frame = run_cli("monitor", job_id, "--state", redis_url, "--once")
    assert "SILENT" in frame.stdout


def test_dashboard_api_on_redis(redis_url: str) -> None:
    job_id = _redis_job(redis_url)
    server = DashboardServer(RedisSource(redis_url), port=0)
    server.start()
    try:
        with urllib.request.urlopen(server.url + "api/jobs", timeout=10) as response:
            jobs = json.loads(response.read())
        with urllib.request.urlopen(f"{server.url}api/jobs/{job_id}", timeout=10) as response:
            job = json.loads(response.read())
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "api/jobs/nope", timeout=10)
    finally:
        server.stop()
    listed = next(j for j in jobs if j["job_id"] == job_id)
    assert (listed["done"], listed["total"], listed["live"]) == (7, 10, True)
    assert job["snapshot"]["by_status"] == {"ok": 6, "not_found": 1}
    assert [p["done"] for p in job["series"]] == [0, 7]
    assert job["series"][-1]["records"] == 30
    assert missing.value.code == 404 and "no job nope" in json.loads(missing.value.read())["error"]


def test_monitor_errors_are_one_line(redis_url: str, tmp_path: Path) -> None:
    assert_one_line_error(
        run_cli("monitor", "nope", "--state", redis_url, "--once"), 2, "no job nope"
    )
    assert_one_line_error(
        run_cli("monitor", "x", "--state", "http://example.invalid", "--once"), 2, "redis://"
    )
    assert_one_line_error(run_cli("monitor", "--workdir", str(tmp_path), "--once"), 2, "no job in")


class _Distributed:
    """A state store with the distributed engineer's `workers()` (forward compatibility)."""

    def __init__(self, store: SqliteStateStore, workers: list[dict[str, Any]]) -> None:
        self._store = store
        self._workers = workers

    def workers(self) -> list[dict[str, Any]]:
        return self._workers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._store, name)


def test_snapshot_shows_workers_and_adds_their_stats(watched: WatchedJob) -> None:
    store = SqliteStateStore(job_dir(watched.workdir, "watched") / "state.sqlite")
    try:
        own = store.get_stats("handler")
        workers = [
            {"worker_id": "w1", "heartbeat_at": time.time(), "current_task": "t", "items_done": 3},
            {"worker_id": "w2", "heartbeat_at": time.time(), "current_task": None, "items_done": 4},
        ]
        store.put_stats("handler:w1", own)
        store.put_stats("handler:w2", own)
        facts = job_snapshot(_Distributed(store, workers))  # type: ignore[arg-type]
    finally:
        store.close()
    assert facts["distributed"] is True and facts["workers"] == workers
    assert facts["requests"] == 3 * own["totals"]["requests"]
    assert facts["records"] == 3 * own["records"]
    one = next(iter(own["hosts"]))
    merged = next(h for h in facts["hosts"] if h["host"] == one)
    assert merged["requests"] == 3 * own["hosts"][one]["requests"]

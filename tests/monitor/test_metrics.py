"""/metrics (prometheus-client text) while a job runs, and after it from its state store."""

from __future__ import annotations

from collections import Counter

from prometheus_client.parser import text_string_to_metric_families

from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.monitor.metrics import MetricsServer
from skyfill.monitor.sources import WorkdirSource
from tests.helpers import all_records, job_dir, repos
from tests.monitor.conftest import WatchedJob, scrape


def _parse(text: str) -> dict[str, list]:
    """{sample name: [(labels, value)]}."""
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def _total(metrics: dict[str, list], name: str) -> float:
    return sum(value for _, value in metrics.get(name, []))


def test_metrics_while_the_job_runs(watched: WatchedJob) -> None:
    assert watched.returncode == 0, watched.stderr[-2000:]
    parsed = [_parse(text) for text in watched.scrapes]
    assert len(parsed) >= 3, len(parsed)
    running = [m for m in parsed if m["skyfill_job_info"][0][0]["status"] == "running"]
    assert running
    beating = [m for m in running if "skyfill_heartbeat_age_seconds" in m]
    assert beating and all(m["skyfill_workers_alive"][0][1] == 1 for m in beating)
    queued = [
        next(v for labels, v in m["skyfill_queue_depth"] if labels["kind"] == "items")
        for m in running
    ]
    assert max(queued) > 0
    dids = [_total(m, "skyfill_dids_total") for m in parsed]
    assert dids == sorted(dids) and dids[-1] <= watched.dids
    busy = [m for m in running if "skyfill_requests_total" in m]
    assert busy
    for m in busy:
        requests = m["skyfill_requests_total"]
        assert all(labels["host"] and labels["code"] for labels, _ in requests)
        answered: Counter[str] = Counter()
        for labels, value in requests:
            if labels["code"] != "none":
                answered[labels["host"]] += value
        counts = {labels["host"]: v for labels, v in m["skyfill_request_seconds_count"]}
        assert counts == dict(answered)  # every answered request has its latency
        for host in counts:
            buckets = [
                v for labels, v in m["skyfill_request_seconds_bucket"] if labels["host"] == host
            ]
            assert buckets == sorted(buckets) and buckets[-1] == counts[host]
    assert _total(parsed[-1], "skyfill_rate_limit_wait_seconds_total") > 0  # 10/s per host


def test_metrics_after_the_job_agree_with_the_dataset(watched: WatchedJob) -> None:
    server = MetricsServer(WorkdirSource(watched.workdir), watched.job_id, port=0)
    try:
        text = scrape(server.url)
    finally:
        server.stop()
    assert text is not None
    metrics = _parse(text)
    rows = all_records(watched.workdir, watched.job_id)
    per_collection = Counter(r["collection"] for r in rows)
    records = {labels["collection"]: v for labels, v in metrics["skyfill_records_total"]}
    assert records == per_collection and sum(records.values()) == len(rows)
    outcomes = Counter(r["status"] for r in repos(watched.workdir, watched.job_id).values())
    dids = {labels["status"]: v for labels, v in metrics["skyfill_dids_total"]}
    assert dids == outcomes and sum(dids.values()) == watched.dids
    store = SqliteStateStore(job_dir(watched.workdir, watched.job_id) / "state.sqlite")
    try:
        items = list(store.iter_items())
    finally:
        store.close()
    assert _total(metrics, "skyfill_bytes_total") == sum(i.metrics["bytes"] for i in items)
    assert _total(metrics, "skyfill_requests_total") == sum(
        i.metrics["api_requests"] for i in items
    )
    assert {labels["kind"]: v for labels, v in metrics["skyfill_queue_depth"]} == {
        "items": 0,
        "tasks": 0,
    }
    assert metrics["skyfill_workers_alive"][0][1] == 0  # the job is over
    assert metrics["skyfill_job_info"][0][0]["status"] == "completed"

"""`skyfill report`: the JSON numbers agree with the state store and the dataset; the HTML
page is self-contained, with its plots inline."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

from skyfill.engine.state.sqlite import SqliteStateStore
from tests.helpers import all_records, assert_one_line_error, job_dir, repos, run_cli
from tests.monitor.conftest import WatchedJob


def _report(watched: WatchedJob, fmt: str, output: Path) -> str:
    result = run_cli(
        "report", "watched", "--workdir", str(watched.workdir), "--format", fmt,
        "--output", str(output),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(output)
    return output.read_text()


def test_json_report_agrees_with_the_store_and_the_dataset(
    watched: WatchedJob, tmp_path: Path
) -> None:
    report = json.loads(_report(watched, "json", tmp_path / "r.json"))
    store = SqliteStateStore(job_dir(watched.workdir, "watched") / "state.sqlite")
    try:
        counts = store.status_counts()
        items = list(store.iter_items())
        samples = store.samples()
    finally:
        store.close()
    rows = all_records(watched.workdir, "watched")
    repo_rows = repos(watched.workdir, "watched")

    assert report["job"]["job_id"] == "watched" and report["job"]["status"] == "completed"
    assert report["outcomes"]["by_status"] == counts
    assert counts == dict(Counter(r["status"] for r in repo_rows.values()))
    failed = Counter(i.error_class for i in items if i.error_class)
    assert report["outcomes"]["error_classes"] == dict(failed)

    records = report["records"]
    assert records["source"] == "dataset" and records["total"] == len(rows)
    assert records["by_collection"] == dict(Counter(r["collection"] for r in rows))
    assert records["decoded_all_runs"] == len(rows)

    sizes = report["repo_sizes"]
    car = [r["car_bytes"] for r in repo_rows.values() if r["car_bytes"] is not None]
    assert sizes["count"] == len(car) and sizes["total_bytes"] == sum(car)
    assert sum(b["count"] for b in sizes["bins"]) == len(car)
    assert sizes["max"] == max(car) and sizes["min"] == min(car)
    assert all(b["from"] <= b["to"] for b in sizes["bins"])

    cost = report["cost"]
    assert cost["requests"] == sum(i.metrics["api_requests"] for i in items)
    assert cost["bytes"] == sum(i.metrics["bytes"] for i in items)
    assert sum(h["requests"] for h in cost["per_host_last_run"]) == cost["requests"]
    pds = Counter(r["pds"] for r in repo_rows.values() if r["pds"])
    assert {p["pds"]: p["dids"] for p in cost["per_pds"] if p["pds"] in pds} == dict(pds)

    tasks = report["workers"]["tasks"]
    assert sum(t["dids"] for t in tasks) == watched.dids
    assert sum(t["rows"] for t in tasks) == len(rows)
    assert abs(sum(t["share"] for t in tasks) - 1.0) < 1e-3
    assert len(report["workers"]["runs"]) == 1

    phases = report["retries"]["phases"]
    assert phases[0]["phase"] == "backfill" and phases[0]["dids_planned"] == watched.dids
    assert sum(report["retries"]["attempts"].values()) == watched.dids

    throughput = report["throughput"]
    assert throughput["samples"] == len(samples) >= 3
    series = throughput["series"]
    assert series[0]["done"] == 0 and series[-1]["done"] == watched.dids
    assert series[-1]["records"] == len(rows)
    assert throughput["dids_per_s_peak"] > 0

    latency = report["latency"]
    assert set(latency) == {h["host"] for h in cost["per_host_last_run"]}
    for host in latency.values():
        assert host["answered"] == host["requests"]
        assert 0 < host["p50_ms"] <= host["p95_ms"] <= host["p99_ms"] <= host["max_ms"]


def test_html_report_is_self_contained(watched: WatchedJob, tmp_path: Path) -> None:
    html = _report(watched, "html", tmp_path / "r.html")
    assert "<script" not in html and "@import" not in html
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)
    charts = re.findall(r"<svg class=\"chart\".*?</svg>", html, flags=re.S)
    assert len(charts) >= 9
    drawn = [c for c in charts if "<polyline" in c or '<rect class="bar"' in c]
    assert len(drawn) >= 9
    assert html.count("<polyline") >= 3  # throughput over time
    for heading in (
        "Throughput over time",
        "Latency per host",
        "Outcomes",
        "Retries per phase",
        "Records per collection",
        "Repository sizes",
        "Cost per host",
        "Workers&#x27; share",
    ):
        assert heading in html, heading


def test_report_of_an_unknown_job_is_one_line(tmp_path: Path) -> None:
    assert_one_line_error(run_cli("report", "nope", "--workdir", str(tmp_path)), 2, "no job nope")

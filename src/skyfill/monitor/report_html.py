"""The HTML template of `skyfill report`: one self-contained file, inline CSS and SVG, no
script and no external resource (it opens the same offline, in a mail, in ten years)."""

from __future__ import annotations

import time
from html import escape
from typing import Any

from skyfill.monitor import svg
from skyfill.monitor.view import human_bytes, human_seconds

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0;
       color: #1d2330; background: #f5f6f8; }
header { background: #1d2330; color: #fff; padding: 18px 32px; }
header h1 { margin: 0; font-size: 20px; }
header p { margin: 4px 0 0; color: #c5cbd6; }
main { max-width: 1100px; margin: 0 auto; padding: 16px 32px 48px; }
section { background: #fff; border-radius: 8px; padding: 16px 20px; margin: 16px 0;
          box-shadow: 0 1px 2px rgba(0,0,0,.08); }
h2 { font-size: 16px; margin: 0 0 10px; }
.kpis { display: flex; flex-wrap: wrap; gap: 12px; }
.kpi { background: #f0f3f9; border-radius: 6px; padding: 8px 14px; min-width: 120px; }
.kpi b { display: block; font-size: 20px; }
table { border-collapse: collapse; width: 100%; margin-top: 8px; }
th, td { text-align: right; padding: 4px 8px; border-bottom: 1px solid #e6e8ec; }
th:first-child, td:first-child { text-align: left; }
svg.chart { max-width: 100%; height: auto; font-size: 11px; fill: #39404d; }
svg.chart .grid { stroke: #e6e8ec; }
.note { color: #6b7280; font-size: 12px; }
header p.warning { color: #ffd166; }
"""


QUANTILES = ("p50", "p95", "p99", "max")
_TASK_KEYS = ("task_id", "phase", "status", "dids", "rows", "seconds")


def _wait(host: dict[str, Any]) -> tuple[int, float]:
    return host["rate_limited"], host["wait_seconds"]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{escape(_cell(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _section(title: str, *parts: str, note: str = "") -> str:
    extra = f'<p class="note">{escape(note)}</p>' if note else ""
    return f"<section><h2>{escape(title)}</h2>{''.join(parts)}{extra}</section>"


def render_report(report: dict[str, Any]) -> str:
    job = report["job"]
    if "outcomes" not in report:
        return _page(job, [_section("Job", f"<p>{escape(str(job.get('status')))}</p>")])
    outcomes, throughput = report["outcomes"], report["throughput"]
    records, sizes, cost = report["records"], report["repo_sizes"], report["cost"]
    retries, workers, latency = report["retries"], report["workers"], report["latency"]
    points = throughput.get("series") or []
    xs = [p["elapsed_s"] for p in points]
    done = sum(n for s, n in outcomes["by_status"].items() if s != "pending")
    kpis = [
        ("DIDs", f"{done:,}/{job['items']:,}"),
        ("records", f"{records['total']:,}"),
        ("wall time", human_seconds(job["wall_seconds"])),
        ("DIDs/s (avg)", f"{throughput.get('dids_per_s_avg', 0):.1f}"),
        ("records/s (avg)", f"{throughput.get('records_per_s_avg', 0):,.0f}"),
        ("requests", f"{cost['requests']:,}"),
        ("received", human_bytes(cost["bytes"])),
        ("DIDs retried", f"{retries['dids_retried']:,}"),
    ]
    if outcomes.get("unchanged"):
        kpis.append(("unchanged (not fetched)", f"{outcomes['unchanged']:,}"))
    sections = [
        _section(
            "Summary",
            '<div class="kpis">'
            + "".join(f'<div class="kpi">{escape(k)}<b>{escape(v)}</b></div>' for k, v in kpis)
            + "</div>",
        ),
        _section(
            "Throughput over time",
            svg.line_chart(
                "DIDs per second",
                xs,
                {"DIDs/s": [p.get("dids_per_s") or 0 for p in points]},
                "seconds since the first sample",
            ),
            svg.line_chart(
                "records per second",
                xs,
                {"records/s": [p.get("records_per_s") or 0 for p in points]},
                "seconds since the first sample",
            ),
            svg.line_chart(
                "DIDs done",
                xs,
                {"DIDs done": [p["done"] for p in points]},
                "seconds since the first sample",
            ),
            note=f"{throughput.get('samples', 0)} samples over {throughput.get('runs', 1)} run(s).",
        ),
        _section(
            "Latency per host",
            svg.grouped_bars(
                "request latency (ms)",
                [
                    (h, [v["p50_ms"] or 0, v["p95_ms"] or 0, v["p99_ms"] or 0])
                    for h, v in latency.items()
                ],
                ["p50", "p95", "p99"],
                " ms",
            ),
            _table(
                ["host", "requests", "answered", "p50 ms", "p95 ms", "p99 ms", "max ms"],
                [
                    [h, v["requests"], v["answered"], *(v[f"{q}_ms"] for q in QUANTILES)]
                    for h, v in latency.items()
                ],
            ),
            note="From request to answer headers, over the last run.",
        ),
        _section(
            "Outcomes",
            svg.bar_chart("DIDs by status", list(outcomes["by_status"].items())),
            _table(["error class", "DIDs"], [[k, v] for k, v in outcomes["error_classes"].items()]),
            _table(
                ["most common reasons", "DIDs"],
                [[e["reason"], e["count"]] for e in outcomes["top_errors"]],
            ),
        ),
        _section(
            "Retries per phase",
            svg.bar_chart(
                "DIDs planned per phase",
                [(p["phase"], p["dids_planned"]) for p in retries["phases"]],
            ),
            _table(
                ["phase", "tasks", "DIDs planned", "DIDs settled there"],
                [
                    [p["phase"], p["tasks"], p["dids_planned"], p["dids_settled"]]
                    for p in retries["phases"]
                ],
            ),
            _table(["tries of a DID", "DIDs"], [[k, v] for k, v in retries["attempts"].items()]),
        ),
        _section(
            "Records per collection",
            svg.bar_chart("records per collection", list(records["by_collection"].items())),
            note=f"From the {records['source']}.",
        ),
        _section(
            "Repository sizes",
            svg.bar_chart(
                "repos by CAR size",
                [
                    (f"{human_bytes(b['from'])} – {human_bytes(b['to'])}", b["count"])
                    for b in sizes["bins"]
                ],
            ),
            _table(
                ["repos", "total", "median", "p95", "largest"],
                [
                    [sizes["count"]]
                    + [human_bytes(sizes.get(k)) for k in ("total_bytes", "p50", "p95", "max")]
                ]
                if sizes["count"]
                else [],
            ),
        ),
        _section(
            "Cost per host",
            svg.bar_chart(
                "requests per PDS (all runs)",
                [(r["pds"], r["requests"]) for r in cost["per_pds"][:20]],
            ),
            svg.bar_chart(
                "bytes received per PDS (all runs)",
                [(r["pds"], r["bytes"]) for r in cost["per_pds"][:20]],
                " B",
            ),
            _table(
                ["host (last run)", "requests", "bytes", "429s", "waited s"],
                [
                    [h["host"], h["requests"], human_bytes(h["bytes"]), *_wait(h)]
                    for h in cost["per_host_last_run"]
                ],
            ),
            note="Per PDS: every request made for its DIDs, identity lookups included.",
        ),
        _section(
            "Workers' share",
            svg.bar_chart(
                "DIDs settled per task", [(t["task_id"], t["dids"]) for t in workers["tasks"][:40]]
            ),
            _table(
                ["task", "phase", "status", "DIDs", "rows", "seconds", "share"],
                [
                    [*(t[k] for k in _TASK_KEYS), f"{100 * t['share']:.1f}%"]
                    for t in workers["tasks"]
                ],
            ),
            _table(
                ["run (host:pid)", "DIDs", "records", "seconds"],
                [
                    [r["run"], r["dids"], r["records"], round(r["to"] - r["from"], 1)]
                    for r in workers["runs"]
                ],
            ),
        ),
    ]
    if report.get("discovery"):
        sections.insert(4, _discovery_section(report["discovery"]))
    if report.get("follow"):
        sections.insert(1, _follow_section(report["follow"]))
    return _page(job, sections)


def _follow_section(follow: dict[str, Any]) -> str:
    """A job run with --follow: its stream, repos per state, and why some are not active."""
    stream = follow.get("stream") or {}
    run = stream.get("last_run") or {}
    return _section(
        "Stream (--follow)",
        _table(
            ["host", "from seq", "phase", "cursor", "lag (s)", "events applied"],
            [
                [
                    follow["host"],
                    follow["start"],
                    follow["phase"],
                    stream.get("cursor"),
                    run.get("lag_s"),
                    run.get("applied"),
                ]
            ],
        ),
        _table(["repos", "count"], [[k, v] for k, v in follow["repos"].items()]),
        _table(
            ["why not active", "repos"],
            [[k, v] for k, v in (stream.get("why_not_active") or {}).items()],
        )
        if stream.get("why_not_active")
        else "",
    )


DISCOVERY_ROWS = 200
"""Hosts shown in the report's discovery table (those not listed or failed first)."""


def _discovery_section(discovery: dict[str, Any]) -> str:
    """Hosts by outcome, and each host with what became of its listing."""
    order = {"failed": 0, "not_listed": 1, "listing": 2, "listed": 3}
    hosts = sorted(discovery["hosts"], key=lambda h: (order.get(h["outcome"], 4), h["host"]))
    shown = hosts[:DISCOVERY_ROWS]
    more = len(hosts) - len(shown)
    return _section(
        "Discovery",
        _table(
            ["relay", "hosts", "listing done", "malformed left out"],
            [
                [r["relay"], r["hosts"], "yes" if r["done"] else "no", r["skipped"]]
                for r in discovery["relays"]
            ],
        )
        if discovery["relays"]
        else "",
        _table(["hosts", "count"], [[k, v] for k, v in discovery["by_outcome"].items()]),
        _table(
            ["host", "via", "relay's status", "outcome", "repos listed", "reason"],
            [
                [
                    h["host"],
                    h["via"] or "--from-host",
                    h["host_status"],
                    h["outcome"],
                    h["repos"],
                    h["reason"],
                ]
                for h in shown
            ],
        ),
        note=f"{discovery['repos_listed']} repos listed."
        + (f" {more} more hosts in the JSON report." if more else ""),
    )


def _trust_warning(job: dict[str, Any]) -> str:
    if job.get("signatures_verified") is not False:
        return ""
    return (
        "<p class=warning><strong>Commit signatures were not verified</strong> "
        "(--no-verify-signatures): rows are not proven to come from their accounts.</p>"
    )


def _page(job: dict[str, Any], sections: list[str]) -> str:
    title = f"skyfill report: {job.get('job_id')}"
    when = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)}</title>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<style>{CSS}</style></head><body><header><h1>{escape(title)}</h1>"
        f"<p>{escape(str(job.get('job_type', '')))} job, {escape(str(job.get('status')))}, "
        f"phase {escape(str(job.get('phase')))} · generated {escape(when)}</p>"
        f"{_trust_warning(job)}</header>"
        f"<main>{''.join(sections)}</main></body></html>\n"
    )

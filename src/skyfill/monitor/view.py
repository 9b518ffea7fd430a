"""Terminal views (rich): the live progress of `skyfill run`, and `skyfill monitor`'s frame.

Both render the same facts (see `progress._Tally.facts` and `snapshot.job_snapshot`): a
bar with DIDs done/total, rates (recent and average), ETA, statuses, retries, 429s,
memory; the monitor adds the runner's heartbeat, a per-host table and a per-worker table.
"""

from __future__ import annotations

from typing import Any

from rich.console import Group, RenderableType
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from skyfill.errors import Outcome


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def human_seconds(s: float | None) -> str:
    if s is None:
        return "-"
    s = int(s)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    if s >= 60:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s}s"


def _bar_line(facts: dict[str, Any]) -> RenderableType:
    total = max(facts.get("total") or 0, 1)
    done = facts.get("done", 0)
    grid = Table.grid(padding=(0, 1))
    grid.add_row(
        Text(str(facts.get("job_id") or ""), style="bold"),
        ProgressBar(total=total, completed=done, width=40),
        Text(f"{done}/{facts.get('total', 0)} DIDs ({100 * done / total:.1f}%)"),
        Text(f"ETA {human_seconds(facts.get('eta_s'))}", style="cyan"),
    )
    return grid


def _rates_line(facts: dict[str, Any]) -> Text:
    text = Text()
    text.append(
        f"{facts.get('dids_per_s_recent', 0):.1f} DIDs/s now, "
        f"{facts.get('dids_per_s', 0):.1f} avg · "
    )
    if "records_per_s" in facts:
        text.append(
            f"{facts.get('records_per_s_recent', 0):.0f} records/s now, "
            f"{facts['records_per_s']:.0f} avg · "
        )
    else:
        text.append(f"{facts.get('records_per_s_recent', 0):.0f} records/s now · ")
    text.append(f"{facts.get('records', 0)} records · {facts.get('requests', 0)} requests · ")
    text.append(f"{facts.get('retries', 0)} retries · ")
    text.append(f"{facts.get('rate_limited', 0)} 429s", style="yellow")
    text.append(f" · RSS {human_bytes(facts.get('rss'))}")
    return text


def _status_line(facts: dict[str, Any]) -> Text:
    text = Text("statuses: ")
    for name, count in sorted((facts.get("by_status") or {}).items()):
        style = "green" if name == Outcome.OK else "red" if name == Outcome.FAILED else "magenta"
        text.append(f"{name}={count} ", style=style)
    return text


def _hosts_line(facts: dict[str, Any]) -> Text:
    text = Text("busiest: ")
    for h in facts.get("busiest_hosts") or []:
        text.append(f"{h['host']} ({h['requests']} req) ")
    throttled = facts.get("throttled_hosts") or []
    if throttled:
        text.append("· throttled: ", style="yellow")
        for h in throttled:
            text.append(f"{h['host']} ({h['rate_limited']}×429) ", style="yellow")
    return text


def render_progress(facts: dict[str, Any]) -> RenderableType:
    """The live view of `skyfill run` on a terminal."""
    return Group(_bar_line(facts), _rates_line(facts), _status_line(facts), _hosts_line(facts))


def render_monitor(facts: dict[str, Any]) -> RenderableType:
    """One frame of `skyfill monitor`."""
    if facts.get("job_id") is None:
        return Text("the job is being planned ...")
    runner = facts["runner"]
    heart = Text(
        f"job {facts['job_id']}: {facts['status']}, phase {facts['phase']} · runner "
        f"{runner['runner'] or '-'} · heartbeat {human_seconds(runner['heartbeat_age_s'])} ago "
    )
    if runner["silent"]:
        heart.append("· SILENT (no live runner)", style="bold red")
    elif runner["live"]:
        heart.append("· live", style="green")
    tasks = facts.get("tasks") or {}
    heart.append(
        f" · tasks {tasks.get('done', 0)}/{tasks.get('total', 0)} done, "
        f"{tasks.get('running', 0)} running"
    )
    parts: list[RenderableType] = [heart, _bar_line(facts), _rates_line(facts), _status_line(facts)]
    hosts = facts.get("hosts") or []
    if hosts:
        table = Table(title="hosts", title_justify="left", expand=False)
        for name in ("host", "requests", "429s", "errors", "bytes", "p50", "p95", "p99", "rate"):
            table.add_column(name, justify="left" if name == "host" else "right")
        for h in hosts[:15]:
            table.add_row(
                h["host"],
                str(h["requests"]),
                str(h["rate_limited"]),
                str(h["errors"]),
                human_bytes(h["bytes"]),
                _ms(h["p50_ms"]),
                _ms(h["p95_ms"]),
                _ms(h["p99_ms"]),
                "-" if h["rate_per_s"] is None else f"{h['rate_per_s']:.1f}/s",
            )
        parts.append(table)
    workers = facts.get("workers") or []
    if workers:
        table = Table(title="workers", title_justify="left")
        for name in ("worker", "heartbeat", "current task", "items done"):
            table.add_column(name)
        for w in workers:
            table.add_row(
                str(w.get("worker_id") or "-"),
                _age(w.get("heartbeat_at"), facts),
                str(w.get("current_task") or "-"),
                str(w.get("items_done", "-")),
            )
        parts.append(table)
    return Group(*parts)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} ms"


def _age(heartbeat_at: float | None, facts: dict[str, Any]) -> str:
    if heartbeat_at is None:
        return "-"
    now = facts.get("now") or 0.0
    return f"{human_seconds(max(0.0, now - heartbeat_at))} ago" if now else str(heartbeat_at)

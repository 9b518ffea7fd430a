"""What a job's discovery did per host and per relay, read from the position it saves
(`engine.discovery`; the backfill's entries are described in `backfill.relays`).

Each host ends as one of OUTCOMES: `listed` (its listing reached the end), `not_listed`
(its relay says it is offline or banned), `failed` (its listing failed; the reason is
kept), or `listing` (not finished yet).
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from skyfill.engine.discovery import discovery_state
from skyfill.engine.state.base import StateStore

OUTCOMES = ("listed", "not_listed", "failed", "listing")
RELAYS = "relays"


def discovery_report(store: StateStore) -> dict[str, Any] | None:
    """The job's discovery per host and relay; None when the job discovers nothing."""
    state = discovery_state(store)
    position = state.get("position")
    if not isinstance(position, dict):
        return None
    hosts = [
        _host(url, entry)
        for url, entry in sorted(position.items())
        if url != RELAYS and isinstance(entry, dict)
    ]
    relays = [
        {
            "relay": relay,
            "hosts": entry.get("hosts", 0),
            "done": bool(entry.get("done")),
            "skipped": entry.get("skipped", 0),
        }
        for relay, entry in sorted((position.get(RELAYS) or {}).items())
    ]
    counts = Counter(h["outcome"] for h in hosts)
    return {
        "done": bool(state.get("done")),
        "relays": relays,
        "hosts": hosts,
        "by_outcome": {o: counts[o] for o in OUTCOMES if counts[o]},
        "repos_listed": sum(h["repos"] for h in hosts),
    }


def _host(url: str, entry: dict[str, Any]) -> dict[str, Any]:
    if entry.get("not_listed"):
        outcome, reason = "not_listed", entry["not_listed"]
    elif entry.get("failed"):
        outcome, reason = "failed", entry["failed"]
    elif entry.get("done"):
        outcome, reason = "listed", None
    else:
        outcome, reason = "listing", None
    return {
        "host": url,
        "via": entry.get("via"),
        "host_status": entry.get("host_status"),
        "outcome": outcome,
        "reason": reason,
        "repos": entry.get("listed", 0),
        "added": entry.get("added", 0),
    }


def summary_lines(report: dict[str, Any], shown: int = 5) -> list[str]:
    """The end-of-run summary's lines about discovery: hosts by outcome, the hosts not
    listed and those that failed (the first `shown` of each; the report has them all)."""
    counts = report["by_outcome"]
    parts = [f"{counts.get('listed', 0)} hosts listed ({report['repos_listed']} repos)"]
    parts += [f"{counts[o]} {o.replace('_', ' ')}" for o in OUTCOMES[1:] if counts.get(o)]
    lines = ["  discovery: " + ", ".join(parts)]
    for relay in report["relays"]:
        skipped = f", {relay['skipped']} malformed left out" if relay["skipped"] else ""
        lines.append(f"    relay {relay['relay']}: {relay['hosts']} hosts{skipped}")
    for outcome in ("not_listed", "failed"):
        hosts = [h for h in report["hosts"] if h["outcome"] == outcome]
        if not hosts:
            continue
        named = [f"{h['host']} ({h['reason']})" for h in hosts[:shown]]
        more = f", and {len(hosts) - shown} more (skyfill report)" if len(hosts) > shown else ""
        lines.append(f"    {outcome.replace('_', ' ')}: " + ", ".join(named) + more)
    return lines

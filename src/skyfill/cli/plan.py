"""What `skyfill plan` prints: the job a `run` would make, and what it would cost."""

from __future__ import annotations

import math
from collections import Counter

from skyfill.atproto.did import did_web_host
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.relays import LISTINGS_AT_ONCE, NOT_LISTED_STATUSES, host_url
from skyfill.engine.handler import Plan

DEFAULT_HOST_LIMIT = (3000, 300.0)
"""Requests per window (seconds) that a PDS allows by default (the common PDS limit)."""


def describe_plan(plan: Plan, config: BackfillConfig) -> str:
    info = plan.input_description
    dids = plan.items
    batches = math.ceil(len(dids) / config.batch_size) if dids else 0
    methods = Counter(did.split(":")[1] for did in dids)
    web_hosts = Counter(did_web_host(d) for d in dids if d.startswith("did:web:"))
    identity_requests = len(dids)  # one PLC or did:web document per DID
    repo_requests = len(dids)
    limit, window = DEFAULT_HOST_LIMIT
    per_second = limit / window
    lines = [*(f"warning: {w}" for w in plan.warnings)]
    holding = f" (repos holding {config.collection})" if config.collection else ""
    if config.from_hosts:
        lines.append(
            f"discovery: listing {', '.join(config.from_hosts)} while the job runs{holding}"
            + "; the counts below are for the DID file only"
        )
    lines += _relay_lines(config, holding)
    lines += [
        f"input: {info.get('path')} ({info.get('lines', 0)} lines, {len(dids)} DIDs, "
        f"{info.get('duplicates', 0)} duplicates, {info.get('malformed', 0)} malformed)",
        f"DIDs by method: {', '.join(f'{m}={n}' for m, n in methods.most_common())}",
        f"batches: {batches} of up to {config.batch_size} DIDs -> {batches} worker tasks "
        f"(phase backfill, group initial_batch), up to {config.retries} retry phases, "
        f"aggregation with fan-in {config.fan_in}",
        f"hosts known before resolution: {len(web_hosts)} did:web hosts"
        + (f" ({', '.join(h for h, _ in web_hosts.most_common(5))})" if web_hosts else "")
        + f"; did:plc PDS hosts are known after resolving through {config.plc_url}",
        f"estimated requests: {identity_requests + repo_requests} "
        f"({identity_requests} identity look-ups + {repo_requests} getRepo), no PDS contacted",
        f"minimum duration at {limit} requests/{window / 60:.0f} min per host: "
        f"{_duration(repo_requests / per_second)} if every repo is on one PDS, "
        f"{_duration(methods.get('plc', 0) / per_second)} for the PLC look-ups",
        f"window: {'all records' if config.since is None else 'records since ' + config.since}",
        "collections: "
        + (", ".join(config.collections) if config.collections else "all (no --collections)"),
        f"sink: {config.sink}" + ("" if config.sink == "parquet" else " (reachable)"),
    ]
    return "\n".join(lines)


def _relay_lines(config: BackfillConfig, holding: str) -> list[str]:
    """What a run does with --from-relay (no relay is contacted here)."""
    lines = []
    for relay in config.from_relays:
        scheme = host_url("HOSTNAME", relay, config.allow_private_network)
        lines.append(
            f"discovery: relay {relay}: its hosts (listHosts, {config.list_limit} per page), "
            f"then every repo of each host from the host itself as {scheme} "
            f"(listRepos){holding}, {LISTINGS_AT_ONCE} hosts at a time, at each host's rate "
            f"limit; hosts the relay says are {' or '.join(NOT_LISTED_STATUSES)} are "
            "reported, not listed; a host that fails is reported, the others go on"
        )
    if config.from_relays and not config.from_hosts:
        lines.append("discovery: the counts below are for the DID file only")
    return lines


def _duration(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"

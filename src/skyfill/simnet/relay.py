"""The simulated network's relay face: `com.atproto.sync.listHosts` over its PDS hosts.

Off unless asked for (`SimServers(relay=RelayOptions())`, `python -m skyfill.simnet
--relay`). The relay lists every PDS host by its bare hostname (`localhost:PORT`, the
host of the URLs the DID documents give), in host order, then any `dead_hosts` (names of
loopback ports nothing listens on: listing them fails with a network error). Each host
has a status (`active` unless `statuses` says otherwise: idle, offline, throttled,
banned), an `accountCount` (the accounts its listRepos shows) and a `seq`.

Paging as indigo's relay does: `limit` 1..1000 (default 200, clamped), the cursor is the
position of a full page's last host, a page shorter than the limit is the last.

RELAY_FAULTS the relay can be given (RelayOptions.fault):
  not_json       listHosts answers 200 with an HTML page
  no_hosts_list  listHosts answers 200 with `{"hosts": "none"}`
"""

from __future__ import annotations

from dataclasses import dataclass, field

from skyfill.simnet.listing import UNLISTED
from skyfill.simnet.network import SimNetwork

HOST_STATUSES = ("active", "idle", "offline", "throttled", "banned")
RELAY_FAULTS = ("not_json", "no_hosts_list")
LIST_HOSTS_LIMIT = (1, 1000, 200)
"""(minimum, maximum, default) of listHosts' `limit`; values outside are clamped."""
FIRST_SEQ = 1000

Answer = tuple[int, dict | str]


@dataclass(kw_only=True, slots=True)
class RelayOptions:
    """How the simulated relay answers."""

    statuses: dict[int, str] = field(default_factory=dict)
    """Status of PDS host INDEX, one of HOST_STATUSES (others: active)."""
    dead_hosts: int = 0
    """Hosts listed (active) that nobody serves: their listRepos fails to connect."""
    fault: str | None = None
    """One of RELAY_FAULTS, or None."""

    def __post_init__(self) -> None:
        for index, status in self.statuses.items():
            if status not in HOST_STATUSES:
                raise ValueError(f"relay host {index}: unknown status {status!r}")
        if self.fault is not None and self.fault not in RELAY_FAULTS:
            raise ValueError(f"unknown relay fault {self.fault!r}; one of {RELAY_FAULTS}")


@dataclass(frozen=True, slots=True)
class RelayHost:
    hostname: str
    status: str
    account_count: int
    seq: int

    def item(self) -> dict:
        return {
            "hostname": self.hostname,
            "seq": self.seq,
            "accountCount": self.account_count,
            "status": self.status,
        }


def relay_hosts(
    network: SimNetwork, pds_urls: list[str], options: RelayOptions, dead: list[str]
) -> list[RelayHost]:
    """The hosts the relay lists: the PDS hosts, then the dead ones (hostnames)."""
    hosts = []
    for index, url in enumerate(pds_urls):
        accounts = sum(
            1 for a in network.accounts.values() if a.host == index and a.status not in UNLISTED
        )
        hostname = url.split("://", 1)[1]
        status = options.statuses.get(index, "active")
        hosts.append(RelayHost(hostname, status, accounts, FIRST_SEQ + index))
    seq = FIRST_SEQ + len(pds_urls)
    hosts += [RelayHost(name, "active", 0, seq + i) for i, name in enumerate(dead)]
    return hosts


def list_hosts(
    hosts: list[RelayHost], options: RelayOptions, cursor: str | None, raw_limit: str | None
) -> Answer:
    """com.atproto.sync.listHosts: (HTTP status, JSON body, or text for a fault)."""
    if options.fault == "not_json":
        return 200, "<html><body>relay</body></html>"
    if options.fault == "no_hosts_list":
        return 200, {"hosts": "none"}
    low, high, default = LIST_HOSTS_LIMIT
    try:
        limit = default if not raw_limit else min(max(int(raw_limit), low), high)
        start = int(cursor) if cursor else 0
    except ValueError:
        return 400, {"error": "InvalidRequest", "message": "bad limit or cursor"}
    page = hosts[start : start + limit]
    body: dict = {"hosts": [host.item() for host in page]}
    if len(page) == limit:
        body["cursor"] = str(start + limit)
    return 200, body

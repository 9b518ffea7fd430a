"""Starting the simulated network: in a background thread (demo, tests) or as a process."""

from __future__ import annotations

import asyncio
import random
import threading
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from skyfill.atproto.tid import encode_tid
from skyfill.simnet.accounts import (
    Account,
    edit_records,
    generate_accounts,
    generate_records,
    plc_did,
)
from skyfill.simnet.network import REV_TIME, SimNetwork
from skyfill.simnet.server import FAULTS, SimServers

STATUSES = ("deactivated", "takendown", "suspended", "not_found", "tombstoned")


@dataclass(kw_only=True, slots=True)
class SimSpec:
    accounts: int = 200
    hosts: int = 3
    mean_records: int = 60
    seed: int = 7
    statuses: list[str] = field(default_factory=list)
    """One account in each of these states (taken from the end of the list)."""
    faults: list[str] = field(default_factory=list)
    """One account with each of these faults."""
    unknown_dids: int = 0
    """DIDs in the DID list that the PLC directory does not know."""
    did_web: bool = False
    """Add one did:web account (did:web:localhost%3A<port of the first PDS>)."""
    big: int = 0
    """Give account 0 this many records (a large repo)."""
    edits: int = 0
    """Rounds of edits applied to every account (records deleted, changed, added; a new
    rev): the same accounts as they are later, to test refreshing a dataset."""


def build_network(spec: SimSpec) -> tuple[SimNetwork, list[str]]:
    """The network and the DID list a job should fetch (accounts + unknown DIDs)."""
    accounts = generate_accounts(spec.accounts, spec.hosts, spec.mean_records, spec.seed)
    if spec.big and accounts:
        rng = random.Random(spec.seed)
        accounts[0].records = generate_records(rng, spec.big, [a.did for a in accounts])
    for round_ in range(1, spec.edits + 1):
        rng = random.Random(f"{spec.seed}-edits-{round_}")
        for account in accounts:
            account.records = edit_records(rng, account.records, [a.did for a in accounts])
    special = list(reversed(accounts))
    for account, status in zip(special, spec.statuses, strict=False):
        _check(status, STATUSES)
        account.status = status
    for account, fault in zip(special[len(spec.statuses) :], spec.faults, strict=False):
        _check(fault, FAULTS)
        account.fault = fault
    network = SimNetwork(accounts, spec.hosts, rev=repo_rev(spec.edits))
    unknown = [plc_did(f"unknown-{spec.seed}-{i}") for i in range(spec.unknown_dids)]
    return network, [a.did for a in accounts] + unknown


def repo_rev(edits: int) -> str:
    """Every repo's rev: one second later per round of edits."""
    return encode_tid(int(REV_TIME.timestamp() * 1_000_000) + edits * 1_000_000)


def add_did_web_account(servers: SimServers, mean_records: int, seed: int) -> str:
    """Once the servers listen: an account whose did:web names the first PDS's port."""
    port = servers.pds_urls[0].rsplit(":", 1)[1]
    did = f"did:web:localhost%3A{port}"
    rng = random.Random(seed)
    account = Account(did=did, handle="web.sim.test", host=0)
    account.records = generate_records(rng, mean_records, [did])
    servers.network.add(account)
    return did


def _check(name: str, allowed: tuple[str, ...]) -> None:
    if name not in allowed:
        raise ValueError(f"unknown simnet option {name!r}; choose from {', '.join(allowed)}")


class SimNetThread:
    """The servers on their own event loop in a daemon thread (context manager)."""

    def __init__(self, network: SimNetwork) -> None:
        self.servers = SimServers(network)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="simnet")

    def __enter__(self) -> SimServers:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.servers.start(), self._loop).result(30)
        return self.servers

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.servers.stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


def write_files(servers: SimServers, dids: list[str], out_dir: Path) -> tuple[Path, Path]:
    """Write truth.json and dids.txt for a started network."""
    out_dir.mkdir(parents=True, exist_ok=True)
    truth = servers.network.truth(servers.plc_url, servers.pds_urls)
    truth_path = out_dir / "truth.json"
    truth_path.write_bytes(orjson.dumps(truth))
    dids_path = out_dir / "dids.txt"
    dids_path.write_text("".join(f"{d}\n" for d in dids))
    return truth_path, dids_path


__all__ = ["Account", "SimNetThread", "SimSpec", "build_network", "write_files"]

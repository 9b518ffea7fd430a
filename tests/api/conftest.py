"""The simulated network of the API tests, and what its accounts hold: the network
rebuilt here from the same seed (its records' contents, which its truth file lacks)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfill.simnet.accounts import generate_accounts
from tests.helpers import Server, start_simnet

NETWORK = {
    "accounts": 40,
    "hosts": 2,
    "mean_records": 30,
    "seed": 7,
    "statuses": "deactivated,not_found",
    "unknown_dids": 1,
}


@pytest.fixture(scope="package")
def apinet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The network, its files in `<dir>/simnet-out/` (as the README starts it)."""
    out = tmp_path_factory.mktemp("apinet") / "simnet-out"
    server = start_simnet(out, **NETWORK)
    yield server
    server.stop()


def network_dir(net: Server) -> Path:
    """The directory holding the network's `simnet-out/`."""
    return Path(net.ready["dids"]).parent.parent


def stored_records(net: Server) -> dict[str, dict[str, dict]]:
    """{did: {path: record}} of every record a correct backfill returns."""
    accounts = {
        a.did: a
        for a in generate_accounts(
            NETWORK["accounts"], NETWORK["hosts"], NETWORK["mean_records"], NETWORK["seed"]
        )
    }
    found: dict[str, dict[str, dict]] = {}
    for did, repo in net.ready["truth_data"]["repos"].items():
        paths = [r["path"] for r in repo["records"]]
        if paths:
            assert set(paths) == set(accounts[did].records), did  # the same network
            found[did] = {path: accounts[did].records[path] for path in paths}
    return found


def statuses(net: Server) -> dict[str, int]:
    """DIDs per outcome a correct backfill of the whole DID list gives."""
    truth = net.ready["truth_data"]["repos"]
    counts: dict[str, int] = {}
    for did in Path(net.ready["dids"]).read_text().split():
        status = truth[did]["status"] if did in truth else "not_found"
        status = {"tombstoned": "deleted"}.get(status, status)
        counts[status] = counts.get(status, 0) + 1
    return counts

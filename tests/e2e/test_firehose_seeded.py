"""`skyfill firehose --since all --until-live` on the seeded reference PDS network (two
hosts, 12 accounts, one with 3000 records, one deactivated, one taken down, one deleted):
the stream alone rebuilds every repo's records, handle and status exactly."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.firehose.truth import Inactive, compare_sqlite
from tests.helpers import Server, run_cli

pytestmark = pytest.mark.refpds


def test_replay_of_both_hosts_rebuilds_every_repo(refpds: Server, tmp_path: Path) -> None:
    db, work = tmp_path / "stream.db", tmp_path / "work"
    for host in refpds.ready["pds"]:
        done = run_cli(
            "firehose", "--from-host", host, "--sink", f"sqlite:///{db}",
            "--workdir", str(work), "--plc-url", refpds.ready["plc"],
            "--allow-private-network", "--progress", "none", "--since", "all", "--until-live",
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert " live: " in done.stdout
    truth = refpds.ready["truth_data"]
    deleted = {did for did, repo in truth["repos"].items() if repo.get("deleted")}
    assert deleted  # the network has a deleted account: the stream says `deleted`
    mismatches = [
        m
        for m in compare_sqlite(db, truth, Inactive.NONE)
        if not (m.split(":", 3)[:3] and m.startswith(tuple(deleted)) and "'deleted'" in m)
    ]
    assert mismatches == []

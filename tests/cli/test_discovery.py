"""`skyfill run --from-host`: repos listed (listRepos / listReposByCollection) while the job
runs, against the simulated network; a crash during the listing resumes at its cursor."""

from __future__ import annotations

import json
import sqlite3
import urllib.request
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest

from tests.helpers import (
    Server,
    job_dir,
    records_by_did,
    repos,
    run_cli,
    start_simnet,
    truth_records,
)

LISTED_STATUSES = {"ok", "deactivated", "takendown", "suspended"}
"""What listRepos shows: deleted (not_found, tombstoned) accounts are absent."""


@pytest.fixture(scope="module")
def hosts(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """40 accounts on 2 hosts; host 1 does not offer listReposByCollection."""
    out = tmp_path_factory.mktemp("discovery-net")
    server = start_simnet(
        out,
        accounts=40,
        hosts=2,
        mean_records=15,
        statuses="deactivated,takendown,suspended,not_found,tombstoned",
        no_list_by_collection="1",
    )
    yield server
    server.stop()


def _run(net: Server, workdir: Path, job_id: str, *flags: str, env: dict | None = None):
    args = ["run", "--workdir", str(workdir), "--job-id", job_id, "--plc-url", net.ready["plc"]]
    args += ["--allow-private-network", "--progress", "none", "--retry-backoff", "0.2", *flags]
    return run_cli(*args, env=env)


def _from_all(net: Server) -> list[str]:
    return [arg for url in net.ready["pds"] for arg in ("--from-host", url)]


def _listed(net: Server, host: int | None = None) -> dict[str, dict]:
    truth = net.ready["truth_data"]["repos"]
    pds = net.ready["pds"]
    return {
        did: repo
        for did, repo in truth.items()
        if repo["status"] in LISTED_STATUSES and (host is None or repo["pds"] == pds[host])
    }


def _get_repo_requests(net: Server) -> dict[str, int]:
    with urllib.request.urlopen(net.ready["pds"][0] + "/_simnet/requests", timeout=10) as r:
        return json.loads(r.read())


def test_from_host_lists_every_repo_of_each_host(hosts: Server, tmp_path: Path) -> None:
    done = _run(hosts, tmp_path, "listed", *_from_all(hosts), "--list-limit", "7")
    assert done.returncode == 0, done.stderr
    expected = _listed(hosts)
    got = repos(tmp_path, "listed")
    assert set(got) == set(expected)  # deleted accounts are not listed
    for did, repo in expected.items():
        assert got[did]["status"] == repo["status"], did
    inactive = [d for d, r in expected.items() if r["status"] != "ok"]
    assert len(inactive) == 3
    fetched = _get_repo_requests(hosts)
    assert not any(fetched.get(did) for did in inactive), "inactive repos are never fetched"
    truth = truth_records(hosts.ready["truth_data"])
    records = records_by_did(tmp_path, "listed")
    assert {d: records.get(d, set()) for d in expected} == {d: truth[d] for d in expected}


def test_dids_and_hosts_combine_without_duplicates(hosts: Server, tmp_path: Path) -> None:
    some = [*sorted(_listed(hosts, host=0))[:5], "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"]
    dids = tmp_path / "dids.txt"
    dids.write_text("\n".join(some) + "\n")
    done = _run(hosts, tmp_path, "both", "--dids", str(dids), *_from_all(hosts))
    assert done.returncode == 0, done.stderr
    got = repos(tmp_path, "both")
    assert set(got) == set(_listed(hosts)) | set(some)
    assert got["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"]["status"] == "not_found"


def test_a_crash_while_listing_resumes_at_the_saved_cursor(hosts: Server, tmp_path: Path) -> None:
    host0 = hosts.ready["pds"][0]
    flags = ("--from-host", host0, "--list-limit", "4")
    crashed = _run(
        hosts, tmp_path, "crash", *flags, env={"SKYFILL_FAILPOINT": "discovery_page_saved:2"}
    )
    assert crashed.returncode != 0  # killed after its second page
    state = job_dir(tmp_path, "crash") / "state.sqlite"
    position = _discovery(state)["position"][host0]
    assert position["listed"] == 8 and position.get("cursor") and not position.get("done")

    resumed = run_cli("resume", "crash", "--workdir", str(tmp_path), "--progress", "none")
    assert resumed.returncode == 0, resumed.stderr
    position = _discovery(state)["position"][host0]
    expected = _listed(hosts, host=0)
    # every repo listed once: the resumed listing started at the cursor, not from the start
    assert position["done"] and position["listed"] == len(expected)
    assert set(repos(tmp_path, "crash")) == set(expected)


def test_collection_uses_list_repos_by_collection_or_falls_back(
    hosts: Server, tmp_path: Path
) -> None:
    collection = "app.bsky.graph.block"
    done = _run(hosts, tmp_path, "blocks", *_from_all(hosts), "--collection", collection)
    assert done.returncode == 0, done.stderr
    truth = hosts.ready["truth_data"]["repos"]
    pds0, pds1 = hosts.ready["pds"]
    holders0 = {
        d
        for d, r in truth.items()
        if r["pds"] == pds0
        and r["status"] == "ok"
        and any(x["path"].startswith(collection + "/") for x in r["records"])
    }
    got = repos(tmp_path, "blocks")
    on_host0 = {d for d in got if truth[d]["pds"] == pds0}
    on_host1 = {d for d in got if truth[d]["pds"] == pds1}
    assert on_host0 == holders0  # listReposByCollection: only repos holding the collection
    assert on_host1 == set(_listed(hosts, host=1))  # no such method: every repo listed
    records = records_by_did(tmp_path, "blocks")
    assert all(path.startswith(collection + "/") for recs in records.values() for path, _ in recs)
    expected = {
        d: {
            (p, c)
            for p, c in truth_records(hosts.ready["truth_data"])[d]
            if p.startswith(collection + "/")
        }
        for d in got
        if truth[d]["status"] == "ok"
    }
    assert {d: records.get(d, set()) for d in expected} == expected


def test_bad_discovery_flags_are_one_line_errors(tmp_path: Path) -> None:
    from tests.helpers import assert_one_line_error

    none = run_cli("run", "--workdir", str(tmp_path))
    assert none.returncode == 2 and "--from-host" in none.stderr
    bad = run_cli("run", "--workdir", str(tmp_path), "--from-host", "ftp://x")
    assert_one_line_error(bad, 2, "from-host must be an http(s) URL")
    nsid = run_cli(
        "run", "--workdir", str(tmp_path), "--from-host", "http://localhost:1", "--collection", "x"
    )
    assert_one_line_error(nsid, 2, "not an NSID")


def _discovery(state: Path) -> dict:
    with closing(sqlite3.connect(state)) as db:
        row = db.execute("SELECT data FROM stats WHERE name = 'discovery'").fetchone()
    return json.loads(row[0])

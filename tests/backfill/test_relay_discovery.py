"""`skyfill run --from-relay`: a relay's hosts (listHosts), then each usable host's repos
listed on the host itself, against the simulated network and its relay.

The network: 40 accounts on 4 PDS hosts; the relay says host 2 is offline and host 3 is
banned, and also lists a host that nobody serves (its listing fails to connect).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from skyfill.atproto.listing import ListedHost, list_hosts
from skyfill.engine.schemas import schema
from tests.helpers import (
    Server,
    assert_one_line_error,
    free_port,
    get_json,
    job_dir,
    json_lines,
    records_by_did,
    repos,
    run_cli,
    start_simnet,
    truth_records,
    xrpc_client,
)

LISTED_STATUSES = {"ok", "deactivated", "takendown"}
"""Accounts listRepos shows (the not_found one is absent)."""
USABLE = (0, 1)
OFFLINE, BANNED = 2, 3


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_simnet(
        tmp_path_factory.mktemp("relay-net"),
        accounts=40,
        hosts=4,
        mean_records=6,
        statuses="deactivated,takendown,not_found",
        relay_hosts=f"{OFFLINE}=offline,{BANNED}=banned",
        relay_dead_hosts=1,
    )
    yield server
    server.stop()


def _run(net: Server, workdir: Path, job_id: str, *flags: str, env: dict | None = None):
    args = ["run", "--workdir", str(workdir), "--job-id", job_id, "--plc-url", net.ready["plc"]]
    args += ["--allow-private-network", "--progress", "none", "--list-limit", "3"]
    args += ["--attempts", "2", "--backoff-max", "0.1", "--retry-backoff", "0.1", *flags]
    return run_cli(*args, env=env)


def _on_hosts(net: Server, hosts: tuple[int, ...]) -> dict[str, dict]:
    """The accounts that listRepos shows on these hosts, from the truth."""
    pds = [net.ready["pds"][i] for i in hosts]
    return {
        did: repo
        for did, repo in net.ready["truth_data"]["repos"].items()
        if repo["pds"] in pds and repo["status"] in LISTED_STATUSES
    }


def _requests(net: Server) -> tuple[list, dict[str, list]]:
    """The cursors of every listHosts request, and of every listRepos request per host."""
    relay = get_json(net.ready["relay"] + "/_simnet/requests")["listHosts"]
    stats = get_json(net.ready["pds"][0] + "/_simnet/stats")["hosts"]
    return relay, {h["url"]: h["list_repos_cursors"] for h in stats}


def _dead_host(net: Server) -> str:
    (dead,) = [h["hostname"] for h in net.ready["relay_hosts"] if h["hostname"][0].isdigit()]
    return f"http://{dead}"


async def test_list_hosts_pages_through_every_host_of_the_relay(net: Server) -> None:
    async with xrpc_client() as (client, _):
        listing = list_hosts(client, net.ready["relay"], limit=2)
        pages = [(hosts, cursor) async for hosts, cursor in listing]
        resumed = list_hosts(client, net.ready["relay"], cursor=pages[0][1], limit=2)
        rest = [host async for hosts, _ in resumed for host in hosts]
    hosts = [host for page, _ in pages for host in page]
    # 5 hosts in pages of 2: 2 full pages with a cursor, a short last one without
    assert [len(page) for page, _ in pages] == [2, 2, 1] and pages[-1][1] is None
    assert [h.hostname for h in hosts] == [h["hostname"] for h in net.ready["relay_hosts"]]
    assert hosts[OFFLINE].status == "offline" and hosts[BANNED].status == "banned"
    accounts = len(_on_hosts(net, (0,)))
    assert hosts[0] == ListedHost(
        net.ready["pds"][0].removeprefix("http://"), "active", accounts, 1000
    )
    assert rest == hosts[2:]  # from a saved cursor: exactly the hosts after it


def test_from_relay_lists_the_usable_hosts_and_reports_the_others(
    net: Server, tmp_path: Path
) -> None:
    relay_before, repos_before = _requests(net)
    done = _run(net, tmp_path, "relay", "--from-relay", net.ready["relay"])
    assert done.returncode == 0, done.stderr

    expected = _on_hosts(net, USABLE)
    got = repos(tmp_path, "relay")
    assert set(got) == set(expected)  # no repo of the offline, banned or dead host
    assert {d: got[d]["status"] for d in got} == {d: r["status"] for d, r in expected.items()}
    truth = truth_records(net.ready["truth_data"])
    records = records_by_did(tmp_path, "relay")
    assert {d: records.get(d, set()) for d in expected} == {d: truth[d] for d in expected}

    relay_after, repos_after = _requests(net)
    assert relay_after[len(relay_before) :] == [None, "3"]  # 5 hosts, 3 per page
    pds = net.ready["pds"]
    for index, url in enumerate(pds):
        asked = repos_after[url][len(repos_before[url]) :]
        if index in USABLE:  # listed once, from its start, on the host itself
            assert asked.count(None) == 1 and len(asked) >= 2, (index, asked)
        else:
            assert asked == [], index  # offline and banned hosts are never asked

    dead = _dead_host(net)
    summary = done.stdout
    assert "discovery: 2 hosts listed" in summary and "2 not listed, 1 failed" in summary
    assert f"{pds[OFFLINE]} (offline)" in summary and f"{pds[BANNED]} (banned)" in summary
    assert f"failed: {dead} (network:" in summary
    events = [(e["event"], e.get("host")) for e in json_lines(done.stderr)]
    assert ("host_not_listed", pds[OFFLINE]) in events
    assert ("host_not_listed", pds[BANNED]) in events
    assert ("host_listing_failed", dead) in events

    report = tmp_path / "report.json"
    made = run_cli(
        "report", "relay", "--workdir", str(tmp_path), "--format", "json", "--output", str(report)
    )
    assert made.returncode == 0, made.stderr
    discovery = json.loads(report.read_text())["discovery"]
    outcomes = {h["host"]: (h["outcome"], h["reason"]) for h in discovery["hosts"]}
    assert outcomes[pds[OFFLINE]] == ("not_listed", "offline")
    assert outcomes[pds[BANNED]] == ("not_listed", "banned")
    assert outcomes[dead][0] == "failed" and "Cannot connect" in outcomes[dead][1]
    assert all(outcomes[pds[i]] == ("listed", None) for i in USABLE)
    assert discovery["relays"] == [
        {"relay": net.ready["relay"], "hosts": 5, "done": True, "skipped": 0}
    ]


def test_a_host_given_with_from_host_is_listed_whatever_the_relay_says(
    net: Server, tmp_path: Path
) -> None:
    offline = net.ready["pds"][OFFLINE]
    some = sorted(_on_hosts(net, (0,)))[:3]
    dids = tmp_path / "dids.txt"
    dids.write_text("".join(f"{did}\n" for did in some))
    relay = net.ready["relay"]
    flags = ("--dids", str(dids), "--from-relay", relay, "--from-host", offline)
    done = _run(net, tmp_path, "both", *flags)
    assert done.returncode == 0, done.stderr
    assert set(repos(tmp_path, "both")) == set(_on_hosts(net, (*USABLE, OFFLINE)))
    assert "not listed: " + net.ready["pds"][BANNED] + " (banned)" in done.stdout
    manifest = json.loads((job_dir(tmp_path, "both") / "manifest.json").read_text())
    assert manifest["input"]["from_relays"] == [relay]
    assert list(Draft202012Validator(schema("job")).iter_errors(manifest)) == []


def test_a_killed_listing_resumes_the_relay_and_each_host_at_its_cursor(
    net: Server, tmp_path: Path
) -> None:
    relay_before, repos_before = _requests(net)
    killed = _run(
        net,
        tmp_path,
        "crash",
        "--from-relay",
        net.ready["relay"],
        env={"SKYFILL_FAILPOINT": "relay_page_saved:1"},
    )
    assert killed.returncode != 0  # killed after the relay's first page was saved
    state = job_dir(tmp_path, "crash") / "state.sqlite"
    position = _discovery(state)["position"]
    assert position["relays"][net.ready["relay"]] == {"cursor": "3", "hosts": 3, "done": False}

    def resume(failpoint: str | None):
        env = {"SKYFILL_FAILPOINT": failpoint} if failpoint else None
        return run_cli("resume", "crash", "--workdir", str(tmp_path), "--progress", "none", env=env)

    killed = resume("discovery_page_saved:2")  # killed again, while the hosts are listed
    assert killed.returncode != 0
    position = _discovery(state)["position"]
    assert position["relays"][net.ready["relay"]]["done"]
    pds = net.ready["pds"]
    halfway = [url for url in pds if position.get(url, {}).get("cursor")]
    assert halfway and not any(position[url].get("done") for url in halfway)

    resumed = resume(None)
    assert resumed.returncode == 0, resumed.stderr
    position = _discovery(state)["position"]
    relay_after, repos_after = _requests(net)
    assert relay_after[len(relay_before) :].count(None) == 1  # the relay listed once from 0
    for index in USABLE:  # every repo listed once: each host resumed at its cursor
        url = pds[index]
        assert position[url]["done"], index
        assert position[url]["listed"] == len(_on_hosts(net, (index,))), index
        assert repos_after[url][len(repos_before[url]) :].count(None) == 1, index
    assert position[_dead_host(net)]["failed"].startswith("network:")
    assert set(repos(tmp_path, "crash")) == set(_on_hosts(net, USABLE))


def test_a_relay_that_cannot_be_listed_is_a_one_line_error(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"
    args = ["run", "--workdir", str(tmp_path), "--allow-private-network", "--progress", "none"]
    args += ["--attempts", "2", "--backoff-max", "0.1"]
    unreachable = run_cli(*args, "--job-id", "closed", "--from-relay", closed)
    _assert_job_failed(unreachable, "Cannot connect", closed.removeprefix("http://"))

    garbage = start_simnet(
        tmp_path_factory.mktemp("bad-relay"), accounts=2, hosts=1, relay_fault="not_json"
    )
    try:
        answered = run_cli(*args, "--job-id", "garbage", "--from-relay", garbage.ready["relay"])
    finally:
        garbage.stop()
    _assert_job_failed(answered, "listHosts", "the answer is not JSON")

    bad = run_cli("run", "--workdir", str(tmp_path), "--from-relay", "wss://relay.example")
    assert_one_line_error(bad, 2, "from-relay must be an http(s) URL")


def test_plan_says_what_a_run_will_do_with_a_relay(tmp_path: Path) -> None:
    plan = run_cli(
        "plan",
        "--workdir",
        str(tmp_path),
        "--from-relay",
        "https://relay.example",
        "--from-relay",
        "http://127.0.0.1:1",
        "--allow-private-network",
    )
    assert plan.returncode == 0, plan.stderr
    out = plan.stdout
    assert "discovery: relay https://relay.example: its hosts (listHosts" in out
    assert "as https://HOSTNAME (listRepos)" in out
    assert "relay http://127.0.0.1:1" in out and "as http://HOSTNAME" in out
    assert "offline or banned are reported, not listed" in out


def _assert_job_failed(result, *needles: str) -> None:
    """Exit 1, no traceback, and the last line says why the job failed."""
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    last = [line for line in result.stderr.splitlines() if line.strip()][-1]
    assert last.startswith("skyfill: job failed:"), result.stderr
    for needle in needles:
        assert needle in last, last


def _discovery(state: Path) -> dict:
    with closing(sqlite3.connect(state)) as db:
        row = db.execute("SELECT data FROM stats WHERE name = 'discovery'").fetchone()
    return json.loads(row[0])

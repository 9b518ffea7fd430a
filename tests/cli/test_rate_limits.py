"""Rate limits through the CLI, against simulated hosts that enforce their own limits.

These assert what the servers counted (requests per window, 429s), not how long things took:
the limiter's timing is exact, in virtual time, in tests/ratelimit/. Where an order in time
is the point (a slow host does not hold up the others), the margin is seconds of the
server's own enforced pace, not of this machine's speed."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq

from tests.helpers import (
    Server,
    assert_one_line_error,
    job_dir,
    repos,
    run_cli,
    run_job,
    start_simnet,
)


@contextmanager
def network(tmp_path: Path, **options: object) -> Iterator[Server]:
    server = start_simnet(tmp_path / "net", **options)
    try:
        yield server
    finally:
        server.stop()


def _server_stats(net: Server) -> list[dict]:
    with urllib.request.urlopen(net.ready["pds"][0] + "/_simnet/stats") as response:
        return json.loads(response.read())["hosts"]


def _run(net: Server, workdir: Path, *flags: str):
    return run_job(net, workdir, "job", *flags)


def _host_of(url: str) -> str:
    return url.removeprefix("http://")


def test_a_strict_server_limit_is_learned_and_never_exceeded(tmp_path: Path) -> None:
    with network(tmp_path, accounts=120, hosts=1, mean_records=5, rate_limit="40/2s") as net:
        result = _run(net, tmp_path)
        stats = _server_stats(net)[0]
    assert result.returncode == 0, result.stderr
    assert {r["status"] for r in repos(tmp_path, "job").values()} == {"ok"}
    # Never over the limit: the server refused at most the very first burst. (Whether each
    # window's allowance is used in full is this machine's speed; see tests/ratelimit.)
    assert stats["served"] == 120 and stats["limited"] <= 1
    status = json.loads(run_cli("status", "job", "--workdir", str(tmp_path), "--json").stdout)
    host = status["hosts"][_host_of(net.ready["pds"][0])]
    assert host["server_limit"] == 40 and host["rate_limited"] == stats["limited"]
    assert host["requests"] == 120 + stats["limited"] and host["wait_seconds"] > 0
    tasks = [
        json.loads(p.read_text()) for p in job_dir(tmp_path, "job").glob("tasks/*/manifest.json")
    ]
    metrics = [t["metrics"] for t in tasks]
    assert sum(m["rate_limited"] for m in metrics) == stats["limited"]
    assert sum(m["api_requests"] for m in metrics) >= 240  # PLC + getRepo per DID
    assert sum(m["wait_seconds"] for m in metrics) > 0


def test_a_configured_host_rate_holds_from_the_first_request(tmp_path: Path) -> None:
    with network(tmp_path, accounts=30, hosts=2, mean_records=5, throttle="0=4/1s") as net:
        throttled = _host_of(net.ready["pds"][0])
        result = _run(net, tmp_path, "--hosts", f"{throttled}=4/1s")
        stats = _server_stats(net)
    assert result.returncode == 0, result.stderr
    assert stats[0]["served"] == 15 and stats[0]["limited"] == 0
    assert {r["status"] for r in repos(tmp_path, "job").values()} == {"ok"}


def test_a_throttled_host_does_not_hold_up_the_others(tmp_path: Path) -> None:
    with network(tmp_path, accounts=50, hosts=5, mean_records=5, throttle="0=2/1s") as net:
        result = _run(net, tmp_path, "--batch-size", "5")
        throttled = net.ready["pds"][0]
        stats = _server_stats(net)[0]
    assert result.returncode == 0, result.stderr
    assert stats["served"] == 10 and stats["limited"] <= 1
    rows = repos(tmp_path, "job").values()
    slow = sorted(r["fetched_at"] for r in rows if r["pds"] == throttled)
    fast = sorted(r["fetched_at"] for r in rows if r["pds"] != throttled)
    assert len(slow) == 10 and len(fast) == 40
    # The server let the throttled host's 10 through at 2 a second: its last one came at
    # least 4.5 s in. Every DID of the four free hosts is done before it.
    assert fast[-1] < slow[-1]


def test_a_repo_too_big_for_max_memory_is_refused_and_the_rest_completes(tmp_path: Path) -> None:
    with network(tmp_path, accounts=6, hosts=1, mean_records=20, big=220_000) as net:
        result = _run(net, tmp_path, "--max-memory", "128m")
        big_did = next(iter(net.ready["truth_data"]["repos"]))
    assert result.returncode == 0, result.stderr
    rows = repos(tmp_path, "job")
    assert rows[big_did]["status"] == "failed"
    assert "--max-memory" in rows[big_did]["error"] and rows[big_did]["attempts"] == 1
    assert all(r["status"] == "ok" for d, r in rows.items() if d != big_did)
    records = pq.read_table(job_dir(tmp_path, "job") / "output" / "repos.parquet")
    assert records.num_rows == 6


def test_bad_rate_flags_are_refused(tmp_path: Path) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:abcdefghijklmnopqrstuvwx\n")
    for flags, needle in (
        (["--rate-limit", "fast"], "not a rate"),
        (["--hosts", "nohostrate"], "HOST=RATE"),
        (["--max-memory", "1m"], "max-memory must be at least 128m"),
    ):
        result = run_cli("run", "--dids", str(dids), "--workdir", str(tmp_path), *flags)
        assert_one_line_error(result, 2, needle)

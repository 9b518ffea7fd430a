"""The live topology on Redis streams (`skyfill ingest` -> `skyfill index`), on the
recorded stream of real signed commits: one ingester, repos added by hand to snapshot,
two index workers of which one is SIGKILLed inside a sink transaction; the PostgreSQL
tables end equal to the truth, every entry acknowledged, and the streams trimmed only
once the group has acknowledged them. deploy/README.md shows the same commands."""

from __future__ import annotations

import json
import shlex
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
import redis
import yaml

from skyfill.cli import main
from tests.firehose.recording import ServedRecording
from tests.firehose.truth import compare_postgres
from tests.helpers import RedisServer, run_cli, start_cli, wait_until
from tests.pgserver import PostgresServer

PARTITIONS = 4
REPO = Path(__file__).resolve().parents[2]
PREFIX = "skyfill:live:live"


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


def _ingest(fh: ServedRecording, state: str, *flags: str) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "ingest", "--from-host", fh.host_url, "--state", state, "--allow-private-network",
        "--partitions", str(PARTITIONS), *flags,
    )  # fmt: skip


def _lengths(client: redis.Redis) -> list[int]:
    return [int(client.xlen(f"{PREFIX}:events:{i}")) for i in range(PARTITIONS)]


def test_a_redis_without_an_append_only_file_is_refused(
    fh_served: ServedRecording, redis_url: str
) -> None:
    done = _ingest(fh_served, redis_url, "--until-live")
    assert done.returncode == 2, done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith("skyfill: error:")]
    assert "does not keep an append-only file" in line and "Traceback" not in done.stderr


def readme_commands(values: dict[str, str]) -> list[list[str]]:
    """The topology block of deploy/README.md: each command's arguments (after
    `skyfill`), its $VARIABLES given `values`."""
    text = (REPO / "deploy" / "README.md").read_text()
    block = text.split("<!-- topology:begin -->")[1].split("<!-- topology:end -->")[0]
    commands = []
    for line in block.splitlines():
        if line.startswith("skyfill "):
            words = shlex.split(line)[1:]
            commands.append([_given(word, values) for word in words])
    return commands


def _given(word: str, values: dict[str, str]) -> str:
    return values[word[1:]] if word.startswith("$") else word


def test_deploy_readme_topology_ends_equal_to_the_truth_with_a_worker_killed(
    fh_served: ServedRecording, aof_redis: RedisServer, postgres: PostgresServer
) -> None:
    """deploy/README.md's commands, in order: the ingester; repos added by hand to
    snapshot (this host has no listRepos), whose events are held while each is fetched
    whole; two index workers, the first SIGKILLed inside its 4th sink transaction; then
    the status. Only flags that bound a test's run are added."""
    state, sink = aof_redis.url, postgres.create_database("live_topology")
    client = redis.Redis.from_url(state)
    dids = (fh_served.path / "dids.txt").read_text().split()[:3]
    values = {
        "HOST": fh_served.host_url, "REDIS": state, "PG": sink, "PLC": fh_served.plc_url,
        "DID": dids[0],
    }  # fmt: skip
    ingest, add_repo, index_1, index_2, status = readme_commands(values)
    bounded_ingest = ["--cursor", "0", "--until-live", "--no-list-repos", "--allow-private-network"]
    bounded_index = ["--until-idle", "2", "--lease-seconds", "3", "--batch-size", "100"]
    bounded_index.append("--allow-private-network")

    ingested = run_cli(*ingest, *bounded_ingest, "--partitions", str(PARTITIONS))
    assert ingested.returncode == 0, ingested.stderr
    written = sum(_lengths(client))
    assert f"{written} events written" in ingested.stdout and written > 2000
    for did in dids:
        added = run_cli(*[did if word == dids[0] else word for word in add_repo])
        assert added.returncode == 0 and "1 repo(s)" in added.stdout, added.stderr
    # no group has read them yet: nothing may be trimmed
    again = run_cli(*ingest, *bounded_ingest)
    assert again.returncode == 0 and sum(_lengths(client)) == written, again.stderr

    killed = start_cli(
        *index_1, *bounded_index, stderr=subprocess.PIPE,
        env={"SKYFILL_FAILPOINT": "stream_applied:4"},
    )  # fmt: skip
    other = None
    try:
        wait_until(lambda: client.get(f"{PREFIX}:lease:0") is not None, timeout=30, what="a lease")
        other = start_cli(*index_2, *bounded_index, stdout=subprocess.PIPE, text=True)
        assert killed.wait(timeout=60) == -signal.SIGKILL  # inside its 4th transaction
        out, _ = other.communicate(timeout=180)
    finally:
        for process in (killed, other):
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
    assert other.returncode == 0, out
    assert "index-2" in out and " 0 entries reclaimed" not in out
    assert f"partitions {list(range(PARTITIONS))}" in out  # all of them in the end

    assert compare_postgres(sink, fh_served.truth) == []
    shown = run_cli(*status, "--json")
    assert shown.returncode == 0, shown.stderr
    facts = json.loads(shown.stdout)
    last = {i: _last_seq(client, i) for i in range(PARTITIONS)}
    for part in facts["partitions"]:  # every entry acknowledged, each cursor at its end
        assert part["events"]["pending"] == 0 and part["events"]["lag"] == 0
        assert part["backfill"]["pending"] == 0 and part["backfill"]["lag"] == 0
        assert part["cursor"] == last[part["partition"]]
    assert facts["repos_queued"] == len(dids)
    # acknowledged by every group: the ingester trims them now
    trimmed = run_cli(*ingest, *bounded_ingest)
    assert trimmed.returncode == 0, trimmed.stderr
    assert sum(_lengths(client)) == 0 and f"{written + len(dids)} entries trimmed" in trimmed.stdout


def _last_seq(client: redis.Redis, partition: int) -> int:
    ((_, fields),) = client.xrevrange(f"{PREFIX}:events:{partition}", count=1)
    return int(fields[b"seq"])


def test_compose_runs_only_commands_and_variables_skyfill_has() -> None:
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    services = compose["services"]
    assert "--appendonly" in services["redis"]["command"]
    assert services["index"]["deploy"]["replicas"] == 2
    ran = set()
    for name in ("ingester", "index", "dashboard"):
        service = services[name]
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        command = main.cli.get_command(click.Context(main.cli), service["command"][0])
        assert command is not None, name
        ran.add(command.name)
        flags = {opt for param in command.params for opt in param.opts}
        assert {w for w in service["command"][1:] if w.startswith("--")} <= flags, name
        envvars = {param.envvar for param in command.params if param.envvar}
        assert set(service.get("environment", {})) <= envvars, name
    assert ran == {"ingest", "index", "dashboard"}

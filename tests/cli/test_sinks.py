"""`skyfill run --sink postgresql://… | sqlite:///…` through the CLI against the simulated
network: the tables equal the ground truth, loads are atomic and replays change nothing
(kill -9 before and after the commit, resume, a second job), a later run refreshes the
repos that changed, and a bad or unreachable sink stops the job before any fetch."""

from __future__ import annotations

import json
import signal
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from skyfill.engine.schemas import schema
from tests import sqltables
from tests.helpers import (
    Server,
    assert_one_line_error,
    job_dir,
    run_cli,
    run_job,
    start_simnet,
    truth_records,
)
from tests.pgserver import PASSWORD, SECRET_USER, PostgresServer, free_port

STATUSES = "deactivated,takendown,suspended,not_found,tombstoned"
FAILING = {"hang": "failed", "bad_cid": "invalid_repo"}


@pytest.fixture(params=["postgresql", "sqlite"])
def sink_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/skyfill.db"
    return request.getfixturevalue("pg_url")


@pytest.fixture(scope="module")
def edited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The session simnet's accounts one round of edits later: records deleted, changed
    and added (new rev), one more account deactivated, one repo that hangs (-> failed) and
    one with a corrupt block (-> invalid_repo)."""
    server = start_simnet(
        tmp_path_factory.mktemp("edited"),
        accounts=60,
        hosts=3,
        mean_records=40,
        statuses=STATUSES + ",deactivated",
        faults="bad_cid,hang",
        unknown_dids=2,
        did_web="",
        edits=1,
    )
    yield server
    server.stop()


def _ok_records(truth: dict) -> dict[str, set[tuple[str, str]]]:
    return {did: recs for did, recs in truth_records(truth).items() if recs}


def _aggregation(workdir: Path, job_id: str) -> dict:
    return json.loads((job_dir(workdir, job_id) / "aggregation" / "manifest.json").read_text())


def _digests(url: str, without: tuple[str, ...] = ()) -> tuple[str, str]:
    return sqltables.digest(url, "records"), sqltables.digest(url, "repos", without)


def test_loads_are_atomic_and_replays_change_nothing(
    simnet: Server, tmp_path: Path, sink_url: str
) -> None:
    truth = simnet.ready["truth_data"]
    # Killed inside the load's transaction: nothing is committed.
    died = run_job(simnet, tmp_path, "j1", "--sink", sink_url, env=_failpoint("sink_loaded"))
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert not sqltables.table_exists(sink_url, "records") or (
        sqltables.rows(sink_url, "records") == []
    )
    # Killed after the commit, before the job is marked completed ...
    died = run_cli("resume", "j1", "--workdir", str(tmp_path), env=_failpoint("aggregated"))
    assert died.returncode == -signal.SIGKILL, died.stderr
    assert sqltables.records_by_did(sink_url) == _ok_records(truth)
    repos = {row["did"]: row for row in sqltables.rows(sink_url, "repos")}
    assert sorted(repos) == sorted(Path(simnet.ready["dids"]).read_text().split())
    for did, repo in truth["repos"].items():
        expected = {"tombstoned": "deleted"}.get(repo["status"], repo["status"])
        assert repos[did]["status"] == expected
        if expected == "ok":
            assert (repos[did]["rev"], repos[did]["record_count"]) == (
                repo["rev"],
                len(repo["records"]),
            )
    loaded = _digests(sink_url)
    # ... so resume loads the same rows again: nothing changes.
    result = run_cli("resume", "j1", "--workdir", str(tmp_path), "--progress", "none")
    assert result.returncode == 0, result.stderr
    assert _digests(sink_url) == loaded
    manifest = _aggregation(tmp_path, "j1")
    kind = "sqlite" if sink_url.startswith("sqlite") else "postgresql"
    rows = manifest["total_rows"]
    assert manifest["sink"]["kind"] == kind and manifest["repos"] == len(repos)
    assert manifest["sink"]["records"] == {
        "rows": rows, "inserted": 0, "updated": 0, "unchanged": rows, "deleted": 0,
    }  # fmt: skip
    assert sum(manifest["records_by_collection"].values()) == rows
    assert not (job_dir(tmp_path, "j1") / "output").exists()  # no Parquet besides
    assert f"output: {kind}" in result.stdout
    job_manifest = json.loads((job_dir(tmp_path, "j1") / "manifest.json").read_text())
    for name, document in (("aggregation", manifest), ("job", job_manifest)):
        errors = list(Draft202012Validator(schema(name)).iter_errors(document))
        assert errors == [], (name, [e.message for e in errors])
    # A second job over the same repos: the records are untouched (they keep the job_id
    # of the job that last changed them); repos rows only get their new fetched_at.
    repos_before = sqltables.digest(sink_url, "repos", ("fetched_at",))
    again = run_job(simnet, tmp_path, "j2", "--sink", sink_url)
    assert again.returncode == 0, again.stderr
    assert sqltables.digest(sink_url, "records") == loaded[0]
    assert sqltables.digest(sink_url, "repos", ("fetched_at",)) == repos_before
    assert _aggregation(tmp_path, "j2")["sink"]["repos"]["updated"] == len(repos)


def test_a_later_run_refreshes_what_changed_and_keeps_what_failed(
    simnet: Server, edited: Server, tmp_path: Path, sink_url: str
) -> None:
    assert run_job(simnet, tmp_path, "before", "--sink", sink_url).returncode == 0
    before_repos = {row["did"]: row for row in sqltables.rows(sink_url, "repos")}
    flags = ("--sink", sink_url, "--timeout", "1", "--attempts", "1", "--retries", "0")
    result = run_job(edited, tmp_path, "after", *flags)
    assert result.returncode == 0, result.stderr

    old, new = simnet.ready["truth_data"], edited.ready["truth_data"]
    expected = truth_records(old)
    for did, repo in new["repos"].items():
        if repo["fault"] not in FAILING:  # gone accounts' rows go, failures keep theirs
            expected[did] = {(r["path"], r["cid"]) for r in repo["records"]}
    expected = {did: recs for did, recs in expected.items() if recs}
    assert sqltables.records_by_did(sink_url) == expected
    assert expected != _ok_records(old)  # the edits did change something

    repos = {row["did"]: row for row in sqltables.rows(sink_url, "repos")}
    failing = {did: r["fault"] for did, r in new["repos"].items() if r["fault"] in FAILING}
    assert len(failing) == 2
    for did, fault in failing.items():
        assert repos[did]["status"] == FAILING[fault] and repos[did]["error"]
        assert repos[did]["rev"] == before_repos[did]["rev"] == old["repos"][did]["rev"]
        assert repos[did]["record_count"] == len(old["repos"][did]["records"])
    newly_gone = [
        did
        for did, r in new["repos"].items()
        if r["status"] != "ok" and old["repos"][did]["status"] == "ok"
    ]
    assert len(newly_gone) == 1 and repos[newly_gone[0]]["status"] == "deactivated"
    counts = _aggregation(tmp_path, "after")["sink"]["records"]
    assert counts["inserted"] > 0 and counts["updated"] > 0 and counts["deleted"] > 0


def test_collections_keep_matching_records_and_bound_the_refresh(
    simnet: Server, edited: Server, tmp_path: Path, pg_url: str
) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("collections: [app.bsky.feed.post, 'app.bsky.graph.*']\n")
    result = run_job(simnet, tmp_path, "some", "--config", str(config), "--sink", pg_url)
    assert result.returncode == 0, result.stderr
    wanted = ("app.bsky.feed.post/", "app.bsky.graph.")
    old = truth_records(simnet.ready["truth_data"])
    expected = {d: {r for r in recs if r[0].startswith(wanted)} for d, recs in old.items()}
    expected = {d: recs for d, recs in expected.items() if recs}
    assert sqltables.records_by_did(pg_url) == expected
    manifest = _aggregation(tmp_path, "some")
    assert set(manifest["records_by_collection"]) == {
        "app.bsky.feed.post", "app.bsky.graph.follow", "app.bsky.graph.block",
    }  # fmt: skip
    counts = {row["did"]: row["record_count"] for row in sqltables.rows(pg_url, "repos")}
    assert all(counts[did] == len(recs) for did, recs in expected.items())

    # A later job for posts only (from the environment) refreshes posts, nothing else.
    flags = ("--sink", pg_url, "--timeout", "1", "--attempts", "1", "--retries", "0")
    env = {"SKYFILL_COLLECTIONS": "app.bsky.feed.post"}
    assert run_job(edited, tmp_path, "posts", *flags, env=env).returncode == 0
    new = edited.ready["truth_data"]["repos"]
    for did, recs in sqltables.records_by_did(pg_url).items():
        graph = {r for r in recs if r[0].startswith("app.bsky.graph.")}
        assert graph == {r for r in expected.get(did, ()) if r[0].startswith("app.bsky.graph.")}
        posts = {r for r in recs if r[0].startswith("app.bsky.feed.post/")}
        if did in new and new[did]["fault"] not in FAILING:
            assert posts == {
                (r["path"], r["cid"])
                for r in new[did]["records"]
                if r["path"].startswith("app.bsky.feed.post/")
            }


def test_bad_sink_urls_and_patterns_are_one_line_errors(simnet: Server, tmp_path: Path) -> None:
    bad = run_job(simnet, tmp_path, "j", "--sink", "mysql://u:hunter2@h/db")
    assert_one_line_error(bad, 2, "is not a sink")
    assert "hunter2" not in bad.stderr
    bad = run_job(simnet, tmp_path, "j", "--collections", "app.bsky.feed.post,app.bsky")
    assert_one_line_error(bad, 2, "'app.bsky' is not an NSID")
    assert not job_dir(tmp_path, "j").exists()
    database = tmp_path / "plan.db"
    plan = run_cli(
        "plan",
        "--dids",
        simnet.ready["dids"],
        "--sink",
        f"sqlite:///{database}",
        env={"SKYFILL_COLLECTIONS": "app.bsky.graph.*"},
    )
    assert plan.returncode == 0, plan.stderr
    assert "collections: app.bsky.graph.*" in plan.stdout
    assert f"sink: sqlite:///{database} (reachable)" in plan.stdout
    assert not database.exists()  # a plan writes nothing


def test_an_unreachable_database_stops_the_job_before_any_fetch(
    simnet: Server, tmp_path: Path
) -> None:
    url = f"postgresql://skyfill:hunter2@127.0.0.1:{free_port()}/db"
    counter = simnet.ready["pds"][0] + "/_simnet/requests"
    before = json.loads(urllib.request.urlopen(counter).read())
    result = run_job(simnet, tmp_path, "j", "--sink", url)
    assert_one_line_error(result, 1, "cannot connect to postgresql://skyfill@127.0.0.1")
    assert "hunter2" not in result.stderr
    assert not job_dir(tmp_path, "j").exists()
    assert json.loads(urllib.request.urlopen(counter).read()) == before
    plan = run_cli("plan", "--dids", simnet.ready["dids"], "--sink", url)
    assert_one_line_error(plan, 1, "cannot connect")


def test_a_password_is_used_never_stored_and_resume_takes_it_from_pgpassword(
    simnet: Server, tmp_path: Path, postgres: PostgresServer, pg_url: str
) -> None:
    database = pg_url.rsplit("/", 1)[1]
    url = f"postgresql://{SECRET_USER}:{PASSWORD}@127.0.0.1:{postgres.port}/{database}"
    died = run_job(simnet, tmp_path, "pw", "--sink", url, env=_failpoint("sink_loaded"))
    assert died.returncode == -signal.SIGKILL, died.stderr  # it connected with the password
    denied = run_cli("resume", "pw", "--workdir", str(tmp_path))
    assert denied.returncode == 1 and "PGPASSWORD" in denied.stderr.splitlines()[-1]
    resumed = run_cli("resume", "pw", "--workdir", str(tmp_path), env={"PGPASSWORD": PASSWORD})
    assert resumed.returncode == 0, resumed.stderr
    assert sqltables.records_by_did(pg_url) == _ok_records(simnet.ready["truth_data"])
    for output in (died, denied, resumed):
        assert PASSWORD not in output.stdout + output.stderr
    for path in job_dir(tmp_path, "pw").rglob("*"):
        if path.is_file():
            assert PASSWORD.encode() not in path.read_bytes(), path
    stored = json.loads((job_dir(tmp_path, "pw") / "manifest.json").read_text())["config"]
    assert stored["sink"] == f"postgresql://{SECRET_USER}@127.0.0.1:{postgres.port}/{database}"


def _failpoint(name: str) -> dict[str, str]:
    return {"SKYFILL_FAILPOINT": name}

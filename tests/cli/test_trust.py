"""Trust, through `skyfill run`: every repo's commit signature and MST rules are verified.

The simulated network signs every repo with its account's key (both curves among its
accounts) and serves some repos broken in one way each; each ends `invalid_repo` with the
kind of its fault and no rows, while every other repo matches the ground truth exactly.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from skyfill.engine.state.sqlite import SqliteStateStore
from tests import sqltables
from tests.helpers import (
    Server,
    dids_by_fault,
    get_json,
    job_dir,
    records_by_did,
    repos,
    run_cli,
    run_job,
    start_simnet,
    truth_records,
)

EXPECTED_KIND = {
    "sig_wrong_key": "bad_signature",
    "sig_high_s": "bad_signature",
    "sig_flipped_bit": "bad_signature",
    "sig_missing": "bad_signature",
    "no_signing_key": "no_signing_key",
    "mst_invalid_key": "mst_invalid_key",
    "mst_unsorted": "mst_key_order",
    "mst_wrong_layer": "mst_key_layer",
}
SIGNATURE_FAULTS = ("sig_wrong_key", "sig_high_s", "sig_flipped_bit", "sig_missing")


@pytest.fixture(scope="module")
def tampered(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_simnet(
        tmp_path_factory.mktemp("tampered"),
        accounts=24,
        hosts=2,
        mean_records=20,
        faults=",".join([*EXPECTED_KIND, "key_rotated"]),
    )
    yield server
    server.stop()


def _error_classes(workdir: Path, job_id: str) -> dict[str, str | None]:
    store = SqliteStateStore(job_dir(workdir, job_id) / "state.sqlite")
    try:
        return {item.key: item.error_class for item in store.iter_items()}
    finally:
        store.close()


def test_each_fault_is_invalid_with_its_kind_and_the_rest_is_exact(
    tampered: Server, tmp_path: Path
) -> None:
    done = run_job(tampered, tmp_path, "t")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    rows, kinds, faulty = (
        repos(tmp_path, "t"),
        _error_classes(tmp_path, "t"),
        dids_by_fault(tampered),
    )
    for fault, kind in EXPECTED_KIND.items():
        row = rows[faulty[fault]]
        assert (row["status"], kinds[faulty[fault]]) == ("invalid_repo", kind), (fault, row)
        assert row["error"].startswith(f"{kind}: ") and "\n" not in row["error"], row
    # a rotated key is learnt again (the cache is bypassed once): the repo verifies
    assert rows[faulty["key_rotated"]]["status"] == "ok"
    bad = {faulty[f] for f in EXPECTED_KIND}
    assert {d for d, r in rows.items() if r["status"] != "ok"} == bad
    got = records_by_did(tmp_path, "t")
    assert not bad & set(got), "rows from a repo that does not verify"
    want = {d: r for d, r in truth_records(tampered.ready["truth_data"]).items() if r}
    assert got == {d: r for d, r in want.items() if d not in bad}


def test_both_curves_are_verified(tampered: Server) -> None:
    """The network's keys are of both curves, so the run above verified both."""
    prefixes = set()
    for did in list(tampered.ready["truth_data"]["repos"])[:8]:
        doc = get_json(f"{tampered.ready['plc']}/{did}")
        for method in doc.get("verificationMethod", []):
            if method["id"].endswith("#atproto"):
                prefixes.add(method["publicKeyMultibase"][:4])
    assert {"zDna", "zQ3s"} <= prefixes, prefixes  # P-256 and secp256k1 multikeys


def test_no_verify_signatures_takes_badly_signed_repos_and_says_so(
    tampered: Server, tmp_path: Path
) -> None:
    done = run_job(tampered, tmp_path, "nv", "--no-verify-signatures")
    assert done.returncode == 0, done.stderr
    rows, faulty = repos(tmp_path, "nv"), dids_by_fault(tampered)
    for fault in [*SIGNATURE_FAULTS, "no_signing_key"]:
        assert rows[faulty[fault]]["status"] == "ok", (fault, rows[faulty[fault]])
    for fault in ("mst_invalid_key", "mst_unsorted", "mst_wrong_layer"):
        assert rows[faulty[fault]]["status"] == "invalid_repo"  # the tree is still checked
    manifest = orjson.loads((job_dir(tmp_path, "nv") / "manifest.json").read_bytes())
    assert manifest["config"]["verify_signatures"] is False

    report = run_cli(
        "report", "nv", "--workdir", str(tmp_path), "--format", "json", "--output", "-"
    )
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout)["job"]["signatures_verified"] is False
    html = tmp_path / "nv.html"
    report = run_cli("report", "nv", "--workdir", str(tmp_path), "--output", str(html))
    assert report.returncode == 0, report.stderr
    assert "Commit signatures were not verified" in html.read_text()


def test_a_verified_jobs_report_does_not_warn(tampered: Server, tmp_path: Path) -> None:
    done = run_job(tampered, tmp_path, "v")
    assert done.returncode == 0, done.stderr
    manifest = orjson.loads((job_dir(tmp_path, "v") / "manifest.json").read_bytes())
    assert manifest["config"]["verify_signatures"] is True
    html = tmp_path / "v.html"
    report = run_cli("report", "v", "--workdir", str(tmp_path), "--output", str(html))
    assert report.returncode == 0, report.stderr
    assert "Commit signatures were not verified" not in html.read_text()


def _refresh(workdir: Path, job: str, again: str) -> None:
    done = run_cli(
        "refresh", job, "--job-id", again, "--workdir", str(workdir), "--progress", "none"
    )
    assert done.returncode == 0, done.stderr


def test_a_refresh_keeps_the_rows_of_a_repo_now_badly_signed(tmp_path: Path) -> None:
    net = start_simnet(tmp_path / "net", accounts=10, hosts=1, mean_records=12)
    db = f"sqlite:///{tmp_path / 'out.db'}"
    try:
        for job, flags in (("base", ()), ("sqlbase", ("--sink", db))):
            first = run_job(net, tmp_path, job, *flags)
            assert first.returncode == 0, first.stderr
        base_rows, base_repos = records_by_did(tmp_path, "base"), repos(tmp_path, "base")
        victim = sorted(d for d, r in base_repos.items() if r["status"] == "ok")[0]
        sql_before = sqltables.rows(db, "records")
        assert base_rows[victim] and any(r["did"] == victim for r in sql_before)
        edit = {"action": "tamper", "did": victim, "fault": "sig_wrong_key"}
        changed = get_json(f"{net.ready['pds'][0]}/_simnet/edit", edit)
        assert changed["rev"] != base_repos[victim]["rev"]  # a new commit, badly signed

        _refresh(tmp_path, "base", "again")
        row = repos(tmp_path, "again")[victim]
        assert row["status"] == "invalid_repo" and row["error"].startswith("bad_signature: ")
        assert row["rev"] == base_repos[victim]["rev"]  # the facts of the rows that stand
        assert records_by_did(tmp_path, "again") == base_rows  # nothing lost, nothing new

        _refresh(tmp_path, "sqlbase", "sqlagain")
        sql_repo = next(r for r in sqltables.rows(db, "repos") if r["did"] == victim)
        assert sql_repo["status"] == "invalid_repo" and sql_repo["rev"] == row["rev"]
        assert sql_repo["error"].startswith("bad_signature: ")
        assert sqltables.rows(db, "records") == sql_before
    finally:
        net.stop()

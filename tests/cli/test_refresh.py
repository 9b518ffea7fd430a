"""`skyfill refresh JOB_ID`: after edits in the simulated network, only the changed repos are
fetched again and the refreshed dataset equals the new truth."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

from tests import sqltables
from tests.helpers import (
    assert_one_line_error,
    get_json,
    records_by_did,
    repos,
    run_cli,
    run_job,
    start_simnet,
    truth_records,
)


def _truth(net) -> dict:
    with urllib.request.urlopen(net.ready["pds"][0] + "/_simnet/truth", timeout=10) as r:
        return json.loads(r.read())


def _fetches(net) -> dict[str, int]:
    with urllib.request.urlopen(net.ready["pds"][0] + "/_simnet/requests", timeout=10) as r:
        return json.loads(r.read())


def test_refresh_fetches_only_changed_repos(tmp_path: Path) -> None:
    net = start_simnet(tmp_path / "net", accounts=24, hosts=2, mean_records=12)
    try:
        first = run_job(net, tmp_path, "base")
        assert first.returncode == 0, first.stderr
        ok = sorted(d for d, r in _truth(net)["repos"].items() if r["status"] == "ok")
        post, gone, profile = ok[0], ok[1], ok[2]
        edit = f"{net.ready['pds'][0]}/_simnet/edit"
        get_json(edit, {"action": "add_post", "did": post, "text": "new"})
        path = sorted(records_by_did(tmp_path, "base")[gone])[0][0]
        get_json(edit, {"action": "delete_record", "did": gone, "path": path})
        get_json(edit, {"action": "update_profile", "did": profile, "description": "new"})
        before = _fetches(net)

        done = run_cli(
            "refresh", "base", "--job-id", "again", "--workdir", str(tmp_path), "--progress", "none"
        )
        assert done.returncode == 0, done.stderr
        after = _fetches(net)
        refetched = {d for d in after if after[d] > before.get(d, 0)}
        assert refetched == {post, gone, profile}  # getRepo only for the changed repos
        assert f"refresh: {len(ok) - 3} repos unchanged" in done.stdout
        report = run_cli(
            "report", "again", "--workdir", str(tmp_path), "--format", "json", "--output", "-"
        )
        assert json.loads(report.stdout)["outcomes"]["unchanged"] == len(ok) - 3

        truth = _truth(net)
        expected = {
            d: recs
            for d, recs in truth_records(truth).items()
            if truth["repos"][d]["status"] == "ok"
        }
        got = records_by_did(tmp_path, "again")
        assert {d: got.get(d, set()) for d in expected} == expected
        assert path not in {p for p, _ in got[gone]}  # the deleted record did not come back
        rows = repos(tmp_path, "again")
        assert (
            rows[post]["rev"] == truth["repos"][post]["rev"] != repos(tmp_path, "base")[post]["rev"]
        )
        assert rows[ok[5]]["rev"] == repos(tmp_path, "base")[ok[5]]["rev"]  # unchanged
    finally:
        net.stop()


def test_refresh_of_an_unknown_job_is_one_line(tmp_path: Path) -> None:
    missing = run_cli("refresh", "nope", "--workdir", str(tmp_path))
    assert_one_line_error(missing, 2, "no finished job nope")


def test_refresh_into_postgresql_equals_the_new_truth(tmp_path: Path, pg_url: str) -> None:
    net = start_simnet(tmp_path / "net", accounts=16, hosts=2, mean_records=10)
    try:
        first = run_job(net, tmp_path, "base", "--sink", pg_url)
        assert first.returncode == 0, first.stderr
        ok = sorted(d for d, r in _truth(net)["repos"].items() if r["status"] == "ok")
        edit = f"{net.ready['pds'][0]}/_simnet/edit"
        get_json(edit, {"action": "add_post", "did": ok[0], "text": "new"})
        victim = sorted(sqltables.records_by_did(pg_url)[ok[1]])[0][0]
        get_json(edit, {"action": "delete_record", "did": ok[1], "path": victim})
        before = {
            (r["did"], r["collection"], r["rkey"]): r for r in sqltables.rows(pg_url, "records")
        }

        done = run_cli("refresh", "base", "--workdir", str(tmp_path), "--progress", "none")
        assert done.returncode == 0, done.stderr
        truth = _truth(net)
        expected = {
            d: recs
            for d, recs in truth_records(truth).items()
            if truth["repos"][d]["status"] == "ok" and recs
        }
        assert sqltables.records_by_did(pg_url) == expected
        after = {
            (r["did"], r["collection"], r["rkey"]): r for r in sqltables.rows(pg_url, "records")
        }
        untouched = [k for k in after if k[0] not in (ok[0], ok[1])]
        assert untouched and all(after[k] == before[k] for k in untouched)  # not rewritten
    finally:
        net.stop()

"""`skyfill run` end to end against the simulated network, through the CLI."""

from __future__ import annotations

import itertools
import json
from collections import Counter
from datetime import datetime
from pathlib import Path

import orjson
import pyarrow.parquet as pq
import pytest

from skyfill.net.transport import HTTP_CLIENTS
from tests.helpers import (
    Server,
    job_dir,
    json_lines,
    records_by_did,
    repos,
    run_cli,
    run_job,
    truth_records,
)


def _run(simnet: Server, workdir: Path, job_id: str, *extra: str):
    return run_job(simnet, workdir, job_id, *extra)


@pytest.mark.parametrize("http_client", HTTP_CLIENTS)
def test_backfill_matches_truth(simnet: Server, tmp_path: Path, http_client: str) -> None:
    result = _run(simnet, tmp_path, "j1", "--batch-size", "7", "--http-client", http_client)
    assert result.returncode == 0, result.stderr
    truth = simnet.ready["truth_data"]
    want = {did: recs for did, recs in truth_records(truth).items() if recs}
    assert records_by_did(tmp_path, "j1") == want
    rows = repos(tmp_path, "j1")
    dids = Path(simnet.ready["dids"]).read_text().split()
    assert sorted(rows) == sorted(dids)
    for did, repo in truth["repos"].items():
        row = rows[did]
        expected = {"tombstoned": "deleted"}.get(repo["status"], repo["status"])
        assert row["status"] == expected, (did, row)
        if expected != "deleted":  # a tombstoned DID has no document, hence no handle
            assert row["handle"] == repo["handle"]
        if expected == "ok":
            assert (row["rev"], row["commit_cid"]) == (repo["rev"], repo["commit"])
            assert row["record_count"] == len(repo["records"])
            assert row["car_bytes"] > 0 and row["error"] is None
        else:
            assert row["error"]
    web = [d for d in dids if d.startswith("did:web:")]
    assert len(web) == 1 and rows[web[0]]["status"] == "ok" and rows[web[0]]["record_count"] > 0
    assert rows[web[0]]["handle"] == "web.sim.test"
    unknown = [d for d in dids if d not in truth["repos"]]
    assert unknown and all(rows[d]["status"] == "not_found" for d in unknown)
    assert "DIDs by status" in result.stdout


def test_output_rows_follow_the_contract(simnet: Server, tmp_path: Path) -> None:
    assert _run(simnet, tmp_path, "j2").returncode == 0
    out = job_dir(tmp_path, "j2") / "output" / "records"
    partitions = sorted(p.name for p in out.iterdir())
    assert "collection=app.bsky.feed.post" in partitions
    table = pq.read_table(next((out / "collection=app.bsky.feed.post").glob("*.parquet")))
    rows = table.to_pylist()
    assert rows
    for row in rows[:200]:
        assert row["uri"] == f"at://{row['did']}/app.bsky.feed.post/{row['rkey']}"
        assert row["job_id"] == "j2" and row["cid"].startswith("bafyrei")
        record = orjson.loads(row["record"])
        assert record["$type"] == "app.bsky.feed.post"
        assert row["created_at"] == datetime.fromisoformat(record["createdAt"])
    images = [orjson.loads(r["record"]) for r in rows if "embed" in r["record"]]
    assert images and "$link" in images[0]["embed"]["images"][0]["image"]["ref"]


def test_job_layout_and_manifests(simnet: Server, tmp_path: Path) -> None:
    assert _run(simnet, tmp_path, "j3", "--batch-size", "20").returncode == 0
    root = job_dir(tmp_path, "j3")
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["job_id"] == "j3" and manifest["status"] == "completed"
    assert manifest["task_count"] == len(list((root / "batches").glob("batch-*.json")))
    for task_dir in (root / "tasks").iterdir():
        task = json.loads((task_dir / "manifest.json").read_text())
        assert (task_dir / f"{task_dir.name}.done").exists()
        data = task_dir / f"{task_dir.name}.parquet"
        assert pq.ParquetFile(data).metadata.num_rows == task["result"]["row_count"]
        assert task["metrics"]["dids_processed"] > 0
    aggregation = json.loads((root / "aggregation" / "manifest.json").read_text())
    total = sum(len(v) for v in records_by_did(tmp_path, "j3").values())
    assert aggregation["total_rows"] == total


def test_fetched_dids_are_not_fetched_twice_in_one_run(simnet: Server, tmp_path: Path) -> None:
    import urllib.request

    url = simnet.ready["pds"][0] + "/_simnet/requests"
    before = json.loads(urllib.request.urlopen(url).read())
    assert _run(simnet, tmp_path, "j4").returncode == 0
    after = json.loads(urllib.request.urlopen(url).read())
    ok = [d for d, r in simnet.ready["truth_data"]["repos"].items() if r["status"] == "ok"]
    assert all(after[d] - before.get(d, 0) == 1 for d in ok)


def test_fetch_processes_give_the_same_output_and_host_statistics(
    simnet: Server, tmp_path: Path
) -> None:
    result = _run(simnet, tmp_path, "fp", "--batch-size", "7", "--fetch-processes", "2")
    assert result.returncode == 0, result.stderr
    assert "Unclosed" not in result.stderr  # the children close their connections
    truth = simnet.ready["truth_data"]
    want = {did: recs for did, recs in truth_records(truth).items() if recs}
    assert records_by_did(tmp_path, "fp") == want
    rows = repos(tmp_path, "fp")
    assert sorted(rows) == sorted(Path(simnet.ready["dids"]).read_text().split())
    ok = [did for did, repo in truth["repos"].items() if repo["status"] == "ok"]
    assert ok and all(rows[did]["status"] == "ok" for did in ok)
    # the children's requests are counted as the job's own (merged per host)
    status = run_cli("monitor", "fp", "--workdir", str(tmp_path), "--once", "--json")
    facts = json_lines(status.stdout)[0]
    counted = {h["host"]: h["requests"] for h in facts["hosts"]}
    for url in simnet.ready["pds"]:
        port = url.rstrip("/").rsplit(":", 1)[-1]
        assert any(host.endswith(f":{port}") and n > 0 for host, n in counted.items()), counted
    assert sum(counted.values()) >= len(ok) * 2  # a DID document and a getRepo each
    summary = json.loads((job_dir(tmp_path, "fp") / "aggregation" / "manifest.json").read_text())
    assert summary["records_by_collection"] == dict(
        sorted(Counter(r[0].split("/")[0] for recs in want.values() for r in recs).items())
    )


def test_a_fetch_process_that_dies_loses_nothing(simnet: Server, tmp_path: Path) -> None:
    # each child is killed at its third chunk: its DIDs fail retryably, a new pool takes over
    # and the retry phases fetch them again
    result = run_job(
        simnet,
        tmp_path,
        "fpk",
        "--batch-size",
        "7",
        "--fetch-processes",
        "2",
        "--retry-backoff",
        "0",
        env={"SKYFILL_FAILPOINT": "fetch_chunk:3"},
    )
    assert result.returncode == 0, result.stderr
    truth = simnet.ready["truth_data"]
    want = {did: recs for did, recs in truth_records(truth).items() if recs}
    assert records_by_did(tmp_path, "fpk") == want
    rows = repos(tmp_path, "fpk")
    assert any(row["attempts"] > 1 for row in rows.values()), "no chunk was lost and retried"


def test_a_did_files_tasks_are_concatenated_into_what_the_streamed_merge_gives(
    simnet: Server, tmp_path: Path
) -> None:
    """A DID file is planned sorted, so each batch covers its own range of DIDs, and every
    task file is sorted by (collection, did, rkey): the aggregation only concatenates the
    task files, and its dataset is, row for row, the one the streamed merge writes."""
    assert (
        _run(simnet, tmp_path, "cat", "--batch-size", "7", "--fetch-processes", "2").returncode == 0
    )
    assert (
        _run(simnet, tmp_path, "str", "--batch-size", "7", "--merge-in-memory", "0").returncode == 0
    )
    root = job_dir(tmp_path, "cat")
    batches = [
        json.loads(path.read_text())["items"] for path in sorted((root / "batches").glob("*.json"))
    ]
    assert len(batches) > 2 and all(items == sorted(items) for items in batches)
    assert all(a[-1] < b[0] for a, b in itertools.pairwise(batches))
    key = ("collection", "did", "rkey")
    for task_file in (root / "tasks").glob("*/task-*.parquet"):
        rows = [tuple(r[c] for c in key) for r in pq.read_table(task_file).to_pylist()]
        assert rows == sorted(set(rows))
        # the engine's own files carry no statistics (never read by them); the output does
        assert not pq.ParquetFile(task_file).metadata.row_group(0).column(0).is_stats_set
    merges = {
        job: json.loads((job_dir(tmp_path, job) / "aggregation" / "manifest.json").read_text())
        for job in ("cat", "str")
    }
    assert merges["cat"]["merge"] == "concatenated" and merges["str"]["merge"] == "streamed"
    partitions = sorted(p.name for p in (root / "output" / "records").iterdir())
    assert len(partitions) > 1
    for partition in partitions:
        tables = {
            job: pq.read_table(
                next((job_dir(tmp_path, job) / "output" / "records" / partition).glob("*.parquet"))
            ).drop_columns(["job_id"])
            for job in ("cat", "str")
        }
        assert tables["cat"].equals(tables["str"]), partition
        output = next((root / "output" / "records" / partition).glob("*.parquet"))
        assert pq.ParquetFile(output).metadata.row_group(0).column(0).is_stats_set
        rows = [(r["did"], r["rkey"]) for r in tables["cat"].select(["did", "rkey"]).to_pylist()]
        assert rows == sorted(rows)

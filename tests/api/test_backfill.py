"""`skyfill.backfill(...)` and `skyfill.open_dataset(...)` against the simulated network:
inputs, resuming by job id, typed errors, Ctrl-C, and an `import skyfill` that stays light."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import urllib.request
from pathlib import Path

import pytest

import skyfill
from skyfill.api import JobSummary, UsageError
from tests.api.conftest import statuses, stored_records
from tests.helpers import Server, wait_until


def _options(net: Server, workdir: Path) -> dict:
    """The keywords of a job of the network in `workdir` (plain values: also for a script)."""
    return {
        "workdir": str(workdir),
        "plc_url": net.ready["plc"],
        "allow_private_network": True,
        "progress": "none",
    }


def _fetches(net: Server) -> dict[str, int]:
    """getRepo requests per DID so far, over every host of the network."""
    with urllib.request.urlopen(net.ready["pds"][0] + "/_simnet/requests", timeout=30) as r:
        return json.loads(r.read())


def _python(script: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, **(env or {})},
    )


def test_dids_as_a_list(apinet: Server, tmp_path: Path) -> None:
    truth = apinet.ready["truth_data"]["repos"]
    ok = sorted(did for did, repo in truth.items() if repo["status"] == "ok")[:3]
    gone = [did for did, repo in truth.items() if repo["status"] == "deactivated"]
    summary = skyfill.backfill([*ok, *gone], job_id="listed", **_options(apinet, tmp_path))
    assert isinstance(summary, JobSummary)
    assert summary.counts == {"ok": 3, "deactivated": 1}
    assert (summary.path / "dids.txt").read_text().split() == [*ok, *gone]
    stored = stored_records(apinet)
    assert summary.records == sum(len(stored[did]) for did in ok)
    table = skyfill.open_dataset(summary.path).to_table(columns=["did", "collection", "rkey"])
    rows = {(r["did"], f"{r['collection']}/{r['rkey']}") for r in table.to_pylist()}
    assert rows == {(did, path) for did in ok for path in stored[did]}
    repos = summary.dataset("repos").to_table().to_pylist()
    assert {r["did"]: r["status"] for r in repos} == {
        **dict.fromkeys(ok, "ok"),
        gone[0]: "deactivated",
    }


def test_a_database_sink(apinet: Server, tmp_path: Path) -> None:
    """With a SQLite sink the summary has no Parquet output, and open_dataset says why."""
    ok = sorted(d for d, r in apinet.ready["truth_data"]["repos"].items() if r["status"] == "ok")
    database = tmp_path / "bsky.db"
    options = _options(apinet, tmp_path)
    summary = skyfill.backfill(ok[:2], sink=f"sqlite:///{database}", job_id="sql", **options)
    assert summary.output is None and summary.sink == f"sqlite:///{database}"
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*) from records").fetchone()[0] == summary.records > 0
    for target in ("sql", summary):
        with pytest.raises(UsageError, match="not to Parquet"):
            skyfill.open_dataset(target, workdir=tmp_path)


def test_from_a_host(apinet: Server, tmp_path: Path) -> None:
    host = apinet.ready["pds"][1]
    truth = apinet.ready["truth_data"]["repos"]
    mine = {did: repo for did, repo in truth.items() if repo["pds"] == host}
    summary = skyfill.backfill(from_hosts=[host], job_id="host", **_options(apinet, tmp_path))
    assert summary.counts["ok"] == sum(1 for r in mine.values() if r["status"] == "ok") > 5
    assert summary.records == sum(len(r["records"]) for r in mine.values())
    assert summary.config["from_hosts"] == [host]


def test_the_same_job_id_again_fetches_nothing(apinet: Server, tmp_path: Path) -> None:
    options = _options(apinet, tmp_path)
    first = skyfill.backfill(apinet.ready["dids"], job_id="again", **options)
    assert first.counts == statuses(apinet)
    before = _fetches(apinet)
    assert skyfill.backfill(apinet.ready["dids"], job_id="again", **options) == first
    assert skyfill.backfill(job_id="again", workdir=tmp_path) == first  # options left out
    assert _fetches(apinet) == before
    with pytest.raises(UsageError, match=r"other options \(concurrency\)"):
        skyfill.backfill(apinet.ready["dids"], job_id="again", concurrency=3, **options)
    with pytest.raises(UsageError, match=r"other options \(dids\)"):
        skyfill.backfill(["did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"], job_id="again", **options)


def test_a_killed_job_resumes_by_its_id(apinet: Server, tmp_path: Path) -> None:
    """Killed (SIGKILL) before its aggregation: no dataset yet; the same call finishes it
    without fetching any repo again."""
    options = _options(apinet, tmp_path)
    script = f"""
        import skyfill
        skyfill.backfill({apinet.ready["dids"]!r}, job_id="killed", batch_size=10, **{options!r})
    """
    killed = _python(script, {"SKYFILL_FAILPOINT": "aggregate_planned"})
    _, err = killed.communicate(timeout=120)
    assert killed.returncode == -signal.SIGKILL, err
    with pytest.raises(UsageError, match="job killed has no dataset yet"):
        skyfill.open_dataset("killed", workdir=tmp_path)
    before = _fetches(apinet)
    summary = skyfill.backfill(apinet.ready["dids"], job_id="killed", batch_size=10, **options)
    assert _fetches(apinet) == before
    assert summary.counts == statuses(apinet)
    assert summary.records == sum(len(r) for r in stored_records(apinet).values())


def test_ctrl_c_stops_the_job_and_raises_interrupted(apinet: Server, tmp_path: Path) -> None:
    """KeyboardInterrupt (SIGINT) while the job runs, slowed by its rate limit: the job
    stops resumable and `Interrupted` is raised, not KeyboardInterrupt."""
    script = f"""
        import signal
        import skyfill
        from skyfill.api import Interrupted
        # Ctrl-C raises KeyboardInterrupt, as in a terminal, even when this test runs under
        # a shell that started it in the background (which leaves SIGINT ignored, inherited)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            skyfill.backfill({apinet.ready["dids"]!r}, job_id="slow", rate_limit="4/1s",
                             **{_options(apinet, tmp_path)!r})
        except Interrupted as exc:
            print("interrupted:", exc.job.status)
    """
    before = _fetches(apinet)
    process = _python(script)
    try:
        wait_until(lambda: _fetches(apinet) != before, timeout=60, what="the first fetch")
        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, err
    assert out.strip() == "interrupted: stopped", (out, err)
    manifest = json.loads((tmp_path / "jobs" / "slow" / "manifest.json").read_text())
    assert manifest["status"] == "stopped"


def test_bad_calls_raise_typed_errors(apinet: Server, tmp_path: Path) -> None:
    options = _options(apinet, tmp_path)
    dids = apinet.ready["dids"]
    cases = [
        (lambda: skyfill.backfill(dids, concurency=3, **options), "unknown option"),
        (lambda: skyfill.backfill(dids, concurrency=0, **options), "concurrency"),
        (lambda: skyfill.backfill(tmp_path / "none.txt", **options), "no file"),
        (lambda: skyfill.backfill(**options), "give DIDs"),
        (lambda: skyfill.backfill(dids, job_id="a b", **options), "invalid job id"),
        (
            lambda: skyfill.backfill(
                dids, follow=True, from_hosts=[apinet.ready["pds"][0]], **options
            ),
            "follow",
        ),
        (lambda: skyfill.backfill(dids, **{**options, "progress": "loud"}), "progress"),
        (lambda: skyfill.open_dataset("nojob", workdir=tmp_path), "no job nojob"),
        (lambda: skyfill.open_dataset(tmp_path, table="repos"), "neither a job"),
    ]
    for call, needle in cases:
        with pytest.raises(UsageError, match=needle):
            call()
    assert not list((tmp_path / "jobs").glob("*/state.sqlite"))  # nothing was started


def test_import_skyfill_loads_nothing_else() -> None:
    """`import skyfill` imports none of skyfill's packages, nor pyarrow or click; the call
    `skyfill.backfill` survives an import of the package's modules."""
    script = """
        import sys
        import skyfill
        print(sorted(m for m in sys.modules if m.startswith(("skyfill.", "pyarrow", "click"))))
        from skyfill import backfill
        import skyfill.backfill.config
        package = skyfill.backfill
        print(callable(package), backfill is package, package.config.__name__)
    """
    process = _python(script)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert out.splitlines() == ["[]", "True True skyfill.backfill.config"]

"""The Airflow DAG (deploy/airflow/skyfill_backfill.py) run for real: `airflow dags test`
from Apache Airflow in a venv of its own (`make airflow`), a SQLite metadata database, the
simulated network, skyfill through its CLI; the jobs' outputs checked against the truth."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    Server,
    all_records,
    get_json,
    records_by_did,
    repos,
    run_job,
    start_simnet,
    truth_records,
)

ROOT = Path(__file__).resolve().parents[2]
DAGS = ROOT / "deploy" / "airflow"
VENV = Path(os.environ.get("SKYFILL_AIRFLOW_VENV", ROOT / ".venv-airflow"))
DAG = "skyfill_backfill"


def airflow_bin() -> Path:
    binary = VENV / "bin" / "airflow"
    if not binary.exists():
        pytest.fail(
            f"Apache Airflow is not installed in {VENV}: `make airflow` builds that venv "
            "(`make test` does it first); SKYFILL_AIRFLOW_VENV names another one.",
            pytrace=False,
        )
    return binary


def airflow_env(home: Path, **extra: str) -> dict[str, str]:
    skyfill = Path(sys.executable).parent / "skyfill"
    assert skyfill.exists(), f"no skyfill executable beside {sys.executable}"
    return {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "SKYFILL_BIN": str(skyfill),
        "SKYFILL_AIRFLOW_RETRY_DELAY": "1",
        **extra,
    }


@pytest.fixture(scope="module")
def migrated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`airflow db migrate` once; each DAG run starts from a copy of that database."""
    home = tmp_path_factory.mktemp("airflow-template")
    started = time.monotonic()
    result = subprocess.run(
        [str(airflow_bin()), "db", "migrate"],
        env=airflow_env(home),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    print(f"airflow db migrate: {time.monotonic() - started:.1f} s")
    return home / "airflow.db"


@dataclass
class DagRun:
    """One `airflow dags test` of the DAG, started in the background in AIRFLOW_HOME `home`
    (a copy of the migrated database): the three tests' runs overlap, since most of each
    is Airflow's own start-up (~25 s)."""

    home: Path
    process: subprocess.Popen[bytes]
    started: float
    returncode: int | None = None
    output: str = ""

    @classmethod
    def start(cls, migrated: Path, home: Path, conf: dict, **env: str) -> DagRun:
        home.mkdir(parents=True)
        shutil.copy(migrated, home / "airflow.db")
        command = [str(airflow_bin()), "dags", "test", DAG, "2026-01-01", "-c", json.dumps(conf)]
        with (home / "dags-test.log").open("wb") as log:
            process = subprocess.Popen(
                command,
                env=airflow_env(home, **env),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its group: Airflow and the skyfill it runs
            )
        return cls(home, process, time.time())

    def wait(self, timeout: float = 300) -> DagRun:
        if self.returncode is None:
            try:
                self.returncode = self.process.wait(timeout)
            finally:
                self.stop()
            log = self.home / "dags-test.log"
            self.output = log.read_text(errors="replace")
            took = log.stat().st_mtime - self.started  # its last line: when it ended
            print(f"airflow dags test ({self.home.name}): {took:.1f} s")
        return self

    def stop(self) -> None:
        """Kill its process group by its PID if it still runs (a test failed or overran)."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def states(self) -> dict[tuple[str, int], tuple[str, int]]:
        """{(task_id, map_index): (state, try_number)} from the metadata database."""
        with sqlite3.connect(self.home / "airflow.db") as db:
            rows = db.execute("select task_id, map_index, state, try_number from task_instance")
            return {(task, index): (state, tries) for task, index, state, tries in rows}


def conf_for(net: Server, workdir: Path, dids: str, *flags: str) -> dict:
    return {
        "dids": dids,
        "workdir": str(workdir),
        "extra_args": ["--plc-url", net.ready["plc"], "--allow-private-network", *flags],
    }


def job_ids(workdir: Path) -> list[str]:
    return sorted(p.name for p in (workdir / "jobs").iterdir())


@pytest.fixture(scope="module")
def flaky(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """12 accounts; the last one's first two getRepo requests answer 503."""
    server = start_simnet(
        tmp_path_factory.mktemp("flaky"), accounts=12, hosts=2, mean_records=20, faults="flaky_503"
    )
    yield server
    server.stop()


@dataclass
class Case:
    run: DagRun
    workdir: Path
    requests_before: dict[str, int]


@pytest.fixture(scope="module")
def cases(
    migrated: Path, flaky: Server, simnet: Server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Case]]:
    """The three DAG runs, started together; each test waits for its own."""
    root = tmp_path_factory.mktemp("dag-runs")
    # Killed and retried: two tasks of 6 DIDs, skyfill SIGKILLed once both are done (before
    # the job knows); the flaky DID ends failed (2 tries, both 503).
    flags = ["--batch-size", "6", "--attempts", "2", "--retries", "0", "--backoff-max", "0.1"]
    killed = conf_for(flaky, root / "killed", flaky.ready["dids"], *flags)
    daily = conf_for(simnet, root / "daily", simnet.ready["dids"])
    daily |= {"date_range": {"start": "2025-10-01", "end": "2025-10-02"}, "daily": True}
    no_did = root / "no-did.txt"
    no_did.write_text("not-a-did\n# a comment\n")
    bad = conf_for(simnet, root / "bad", str(no_did))
    before = get_json(flaky.ready["pds"][0] + "/_simnet/requests")
    started = {
        "killed": (
            DagRun.start(
                migrated, root / "home-killed", killed, SKYFILL_FAILPOINT="task_marked_done:2"
            ),
            before,
        ),
        "daily": (DagRun.start(migrated, root / "home-daily", daily), {}),
        "bad": (DagRun.start(migrated, root / "home-bad", bad), {}),
    }
    confs = {"killed": killed, "daily": daily, "bad": bad}
    try:
        yield {
            name: Case(run, Path(confs[name]["workdir"]), counts)
            for name, (run, counts) in started.items()
        }
    finally:
        for run, _ in started.values():
            run.stop()


def test_killed_run_is_resumed_and_failed_dids_retried(
    cases: dict[str, Case], flaky: Server
) -> None:
    """Airflow's second try of the killed run resumes the same job, fetching nothing again;
    the branch retries the failed DID; the output is the truth."""
    case = cases["killed"]
    run, workdir = case.run.wait(), case.workdir
    assert run.returncode == 0, run.output[-5000:]

    states = run.states()
    assert states[("validate", -1)] == ("success", 1)
    assert states[("run", 0)] == ("success", 2)  # the first try was killed
    assert states[("failed_dids", -1)][0] == "success"
    assert states[("retry_failed", -1)][0] == "success"
    assert states[("no_failed_dids", -1)][0] == "skipped"
    assert states[("report", -1)][0] == "success"

    [job] = job_ids(workdir)
    assert job.startswith("airflow-manual__")
    assert f"starting job {job} (try 1)" in run.output
    assert "skyfill run: exit -9" in run.output
    assert f"resuming job {job} (try 2)" in run.output

    truth = flaky.ready["truth_data"]
    assert records_by_did(workdir, job) == {d: r for d, r in truth_records(truth).items() if r}
    keys = [(r["did"], r["collection"], r["rkey"]) for r in all_records(workdir, job)]
    assert len(keys) == len(set(keys))
    assert {d: r["status"] for d, r in repos(workdir, job).items()} == dict.fromkeys(
        truth["repos"], "ok"
    )
    after = get_json(flaky.ready["pds"][0] + "/_simnet/requests")
    fetched = {did: after[did] - case.requests_before.get(did, 0) for did in truth["repos"]}
    [flaky_did] = [d for d, r in truth["repos"].items() if r["fault"] == "flaky_503"]
    assert fetched.pop(flaky_did) == 3  # two 503s in the job, then the retry
    assert set(fetched.values()) == {1}  # the resumed try fetched nothing again

    report = json.loads((workdir / "jobs" / job / "report.json").read_text())
    assert report["job"]["status"] == "completed"
    assert report["outcomes"]["by_status"] == {"ok": len(truth["repos"])}


def test_daily_slicing_runs_one_job_per_day(
    cases: dict[str, Case], simnet: Server, tmp_path: Path
) -> None:
    """date_range with daily: one job per day, each as `skyfill run --since DAY` makes it
    (records made since that day); no DID failed, so no retry."""
    case = cases["daily"]
    run, workdir = case.run.wait(), case.workdir
    assert run.returncode == 0, run.output[-5000:]
    states = run.states()
    assert states[("run", 0)] == ("success", 1) and states[("run", 1)] == ("success", 1)
    assert states[("retry_failed", -1)][0] == "skipped"
    assert states[("report", -1)][0] == "success"

    first, second = job_ids(workdir)
    assert first.endswith("-20251001") and second.endswith("-20251002")
    assert first.removesuffix("-20251001") == second.removesuffix("-20251002")
    for job, day in ((first, "2025-10-01"), (second, "2025-10-02")):
        assert run_job(simnet, tmp_path, day, "--since", day).returncode == 0
        assert records_by_did(workdir, job) == records_by_did(tmp_path, day)
        manifest = json.loads((workdir / "jobs" / job / "manifest.json").read_text())
        assert manifest["config"]["since"] == f"{day}T00:00:00+00:00"
    made, later = records_by_did(workdir, first), records_by_did(workdir, second)
    assert later and all(later[did] <= made[did] for did in later)
    assert sum(map(len, later.values())) < sum(map(len, made.values()))


def test_bad_input_fails_the_validate_task(cases: dict[str, Case]) -> None:
    """A DID file without a DID: `skyfill plan` refuses it, validate fails once (no retry),
    nothing runs, no job is made."""
    case = cases["bad"]
    run = case.run.wait()
    assert run.returncode != 0 and "DagRun failed" in run.output
    states = run.states()
    assert states[("validate", -1)] == ("failed", 1)
    assert states[("report", -1)][0] == "upstream_failed"
    assert "skyfill plan: skyfill: error: the input holds no valid DID" in run.output
    assert not (case.workdir / "jobs").exists()

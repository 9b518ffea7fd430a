"""skyfill_backfill: an Airflow 3 DAG that runs one skyfill backfill (or one per day).

validate -> run -> failed_dids (branch) -> retry_failed | no_failed_dids -> report

- validate: a dry run (`skyfill plan`) of the run's parameters; bad input fails the DAG
  run there, once, without retries. It returns the jobs to run: one, or one per day of
  `date_range` with `daily`.
- run (mapped over the jobs, one at a time): `skyfill run`, or `skyfill resume` when the
  job already exists. Job ids come from the DAG run (`airflow-<run_id>`, `-<YYYYMMDD>` per
  day), so a retried try, after a crash or a kill of the worker, continues the same job
  where it stopped instead of starting over.
- failed_dids: `skyfill status JOB --json`; if some DID of a job ended `failed`,
  retry_failed runs `skyfill retry JOB --failed` for those jobs, else no_failed_dids.
- report: `skyfill report JOB --format json` (and the HTML page) into the job's directory;
  the job's numbers are the task's return value (XCom).

skyfill is called through its CLI: `SKYFILL_BIN` (or the `skyfill_bin` parameter) names
the executable, `skyfill` on PATH by default. deploy/airflow/README.md has the rest.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from datetime import date, timedelta
from pathlib import Path
from typing import Any, NoReturn

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import Param, dag, get_current_context, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException

log = logging.getLogger(__name__)

BAD_INVOCATION = 2  # skyfill's exit code for bad input (one line on stderr)
RETRIES = int(os.environ.get("SKYFILL_AIRFLOW_RETRIES", "2"))
RETRY_DELAY = timedelta(seconds=float(os.environ.get("SKYFILL_AIRFLOW_RETRY_DELAY", "60")))
MAX_DAYS = 366
PROGRESS = ("--progress", "log")  # JSON lines into the task's log

PARAMS = {
    "dids": Param(None, type=["null", "string"], description="DID file, one DID per line"),
    "from_host": Param(
        [], type="array", items={"type": "string"}, description="PDS URLs to list (listRepos)"
    ),
    "from_relay": Param(
        [], type="array", items={"type": "string"}, description="relay URLs (listHosts)"
    ),
    "since": Param(
        None, type=["null", "string"], description="--since: 7d, 12h, 2025-01-01, ISO time, all"
    ),
    "date_range": Param(
        None,
        type=["null", "object"],
        properties={"start": {"type": "string"}, "end": {"type": "string"}},
        required=["start", "end"],
        description="{start, end} (YYYY-MM-DD, inclusive); instead of since",
    ),
    "daily": Param(False, type="boolean", description="one job per day of date_range"),
    "sink": Param(
        None, type=["null", "string"], description="--sink: parquet, sqlite:///…, postgresql://…"
    ),
    "concurrency": Param(
        None, type=["null", "integer"], minimum=1, description="--concurrency: repos at once"
    ),
    "workdir": Param(
        None, type=["null", "string"], description="default: $SKYFILL_WORKDIR or ~/skyfill-work"
    ),
    "config": Param(None, type=["null", "string"], description="skyfill YAML config file"),
    "extra_args": Param(
        [], type="array", items={"type": "string"}, description="more `skyfill run` flags"
    ),
    "job_id": Param(None, type=["null", "string"], description="default: airflow-<run_id>"),
    "skyfill_bin": Param(None, type=["null", "string"], description="default: $SKYFILL_BIN"),
}


# -- what the tasks are made of (plain functions) -------------------------------------------


def skyfill_bin(params: dict[str, Any]) -> str:
    return params.get("skyfill_bin") or os.environ.get("SKYFILL_BIN") or "skyfill"


def workdir(params: dict[str, Any]) -> str:
    """An absolute path: a retried try may start in another working directory."""
    chosen = params.get("workdir") or os.environ.get("SKYFILL_WORKDIR") or "~/skyfill-work"
    return str(Path(chosen).expanduser().resolve())


def base_job_id(params: dict[str, Any], run_id: str) -> str:
    """`airflow-<run_id>` with what a job id may not hold replaced by '-' (or the param)."""
    if params.get("job_id"):
        return params["job_id"]
    return "airflow-" + re.sub(r"[^A-Za-z0-9._-]+", "-", run_id).strip("-")[:100]


def days(date_range: dict[str, str]) -> list[date]:
    """Every day from start to end, both included; bad ranges fail the DAG run."""
    try:
        start, end = date.fromisoformat(date_range["start"]), date.fromisoformat(date_range["end"])
    except ValueError as exc:
        raise AirflowFailException(f"date_range: {exc} (want YYYY-MM-DD)") from None
    if end < start:
        raise AirflowFailException(f"date_range: end {end} is before start {start}")
    if (end - start).days >= MAX_DAYS:
        raise AirflowFailException(f"date_range: more than {MAX_DAYS} days")
    return [start + timedelta(days=n) for n in range((end - start).days + 1)]


def plan_jobs(params: dict[str, Any], run_id: str) -> list[dict[str, str | None]]:
    """[{job_id, since}]: one job, or one per day of `date_range` when `daily` (since None:
    the flag is not given, so a config file or SKYFILL_SINCE may set it)."""
    base = base_job_id(params, run_id)
    window = params.get("date_range")
    if window and params.get("since"):
        raise AirflowFailException("give since or date_range, not both")
    if not window:
        if params.get("daily"):
            raise AirflowFailException("daily needs a date_range")
        return [{"job_id": base, "since": params.get("since")}]
    span = days(window)
    if not params.get("daily"):
        return [{"job_id": base, "since": span[0].isoformat()}]
    return [{"job_id": f"{base}-{day:%Y%m%d}", "since": day.isoformat()} for day in span]


def job_flags(params: dict[str, Any], job: dict[str, Any]) -> list[str]:
    """The flags `skyfill plan` and `skyfill run` share, for one job. A parameter left unset
    gives no flag: skyfill's own precedence (SKYFILL_* variables, `config`, defaults) holds."""
    flags = ["--workdir", workdir(params), "--job-id", job["job_id"]]
    single = {"--since": job["since"], "--config": params.get("config")}
    single |= {"--dids": params.get("dids"), "--sink": params.get("sink")}
    single["--concurrency"] = params.get("concurrency")
    for flag, value in single.items():
        if value is not None and value != "":
            flags += [flag, str(value)]
    for url in params.get("from_host") or []:
        flags += ["--from-host", url]
    for url in params.get("from_relay") or []:
        flags += ["--from-relay", url]
    return flags + list(params.get("extra_args") or [])


def job_exists(params: dict[str, Any], job_id: str) -> bool:
    return (Path(workdir(params)) / "jobs" / job_id / "state.sqlite").exists()


def skyfill(params: dict[str, Any], *args: str) -> None:
    """Run `skyfill ARGS`, its output (stdout and stderr) into the task's log line by line.
    When Airflow stops the task it signals the task's process group, skyfill included (on
    SIGTERM it checkpoints and exits 130); should this function end first, skyfill is
    stopped here."""
    command = [binary(params), *args]
    log.info("$ %s", " ".join(command))
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1
    )
    last = ""
    try:
        assert process.stdout is not None
        for line in process.stdout:
            last = line.strip() or last
            log.info("%s", line.rstrip())
        code = process.wait()
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    if code:
        fail(args[0], code, last)


def skyfill_output(params: dict[str, Any], *args: str) -> str:
    """`skyfill ARGS`'s standard output, for a short command (status, report)."""
    command = [binary(params), *args]
    log.info("$ %s", " ".join(command))
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    for line in done.stderr.splitlines():
        log.info("%s", line)
    if done.returncode:
        lines = done.stderr.strip().splitlines()
        fail(args[0], done.returncode, lines[-1] if lines else "")
    return done.stdout


def binary(params: dict[str, Any]) -> str:
    name = skyfill_bin(params)
    if shutil.which(name) is None:
        raise AirflowFailException(f"skyfill not found: {name!r} (set SKYFILL_BIN)")
    return name


def fail(what: str, code: int, last: str) -> NoReturn:
    """A bad invocation fails the task for good; anything else fails this try (Airflow
    retries it: a killed or stopped job is resumed)."""
    if code == BAD_INVOCATION:
        raise AirflowFailException(f"skyfill {what}: {last}")
    raise AirflowException(f"skyfill {what}: exit {code}: {last}")


def failed_counts(params: dict[str, Any], job_ids: list[str]) -> dict[str, int]:
    """{job_id: DIDs whose status is failed}, from one `skyfill status --json`."""
    jobs = json.loads(skyfill_output(params, "status", "--workdir", workdir(params), "--json"))
    by_id = {job["job_id"]: job["by_status"].get("failed", 0) for job in jobs}
    return {job_id: int(by_id[job_id]) for job_id in job_ids}


# -- the DAG -----------------------------------------------------------------------------------


@dag(
    dag_id="skyfill_backfill",
    schedule=None,
    catchup=False,
    params=PARAMS,
    default_args={"retries": RETRIES, "retry_delay": RETRY_DELAY},
    tags=["skyfill"],
    doc_md=__doc__,
)
def skyfill_backfill() -> None:
    @task(retries=0)
    def validate(params: dict[str, Any], run_id: str) -> list[dict[str, Any]]:
        """A dry run of the first job: the input, the flags, the sink's URL."""
        jobs = plan_jobs(params, run_id)
        skyfill(params, "plan", *job_flags(params, jobs[0]))
        log.info("jobs: %s", ", ".join(j["job_id"] for j in jobs))
        return jobs

    @task(max_active_tis_per_dagrun=1, map_index_template="{{ job_id }}")
    def run(job: dict[str, Any], params: dict[str, Any], ti: Any) -> str:
        """The job, resumed where it stopped when it exists (a retried try)."""
        get_current_context()["job_id"] = job["job_id"]
        if job_exists(params, job["job_id"]):
            log.info("resuming job %s (try %s)", job["job_id"], ti.try_number)
            skyfill(params, "resume", job["job_id"], "--workdir", workdir(params), *PROGRESS)
        else:
            log.info("starting job %s (try %s)", job["job_id"], ti.try_number)
            skyfill(params, "run", *job_flags(params, job), *PROGRESS)
        return job["job_id"]

    @task.branch(retries=0)
    def failed_dids(job_ids: list[str], params: dict[str, Any], ti: Any) -> str:
        counts = failed_counts(params, list(job_ids))
        log.info("failed DIDs per job: %s", counts)
        ti.xcom_push(key="failed", value=counts)
        return "retry_failed" if any(counts.values()) else "no_failed_dids"

    @task
    def retry_failed(params: dict[str, Any], ti: Any) -> list[str]:
        """`skyfill retry JOB --failed` for each job that has failed DIDs."""
        counts = ti.xcom_pull(task_ids="failed_dids", key="failed")
        retried = [job_id for job_id, failed in counts.items() if failed]
        for job_id in retried:
            skyfill(params, "retry", job_id, "--failed", "--workdir", workdir(params), *PROGRESS)
        return retried

    @task(trigger_rule="none_failed_min_one_success")
    def report(job_ids: list[str], params: dict[str, Any]) -> dict[str, Any]:
        """Each job's report (report.json in its directory); its numbers, as XCom."""
        summary = {}
        for job_id in job_ids:
            root = Path(workdir(params)) / "jobs" / job_id
            output = root / "report.json"
            command = ["report", job_id, "--workdir", workdir(params), "--format", "json"]
            skyfill(params, *command, "--output", str(output))
            numbers = json.loads(output.read_text())
            summary[job_id] = {
                "status": numbers["job"]["status"],
                "by_status": numbers["outcomes"]["by_status"],
                "records": numbers["records"]["total"],
                "output": str(root / "output"),
            }
            log.info("job %s: %s", job_id, summary[job_id])
        return summary

    job_ids = run.expand(job=validate())
    branch = failed_dids(job_ids)
    retried = retry_failed()
    clean = EmptyOperator(task_id="no_failed_dids")
    branch >> [retried, clean]
    [retried, clean] >> report(job_ids)


skyfill_backfill()

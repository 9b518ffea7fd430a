"""Off a terminal: JSON progress lines every --progress-interval, structured JSON logs,
and --log-level (flag, SKYFILL_LOG_LEVEL, config file) filtering them."""

from __future__ import annotations

from pathlib import Path

from tests.helpers import Server, assert_one_line_error, json_lines, run_cli, run_job
from tests.monitor.conftest import WatchedJob

PROGRESS_FIELDS = {
    "ts",
    "level",
    "event",
    "job_id",
    "done",
    "total",
    "dids_per_s",
    "dids_per_s_recent",
    "records",
    "records_per_s",
    "records_per_s_recent",
    "eta_s",
    "by_status",
    "retries",
    "rate_limited",
    "requests",
    "rss",
    "busiest_hosts",
    "throttled_hosts",
}


def test_progress_lines_off_a_terminal(watched: WatchedJob) -> None:
    assert watched.returncode == 0, watched.stderr[-2000:]
    lines = [line for line in watched.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("job watched in ")
    assert len(json_lines(watched.stderr)) == len(lines) - 1  # everything else is JSON
    progress = [e for e in watched.logs if e["event"] == "progress"]
    assert len(progress) >= 4, len(progress)  # a ~6 s job, a line every 0.5 s
    for line in progress:
        assert set(line) >= PROGRESS_FIELDS, PROGRESS_FIELDS - set(line)
        assert line["level"] == "info" and line["job_id"] == "watched"
        assert line["total"] == watched.dids and "task_id" not in line
    done = [line["done"] for line in progress]
    assert done == sorted(done) and done[-1] == watched.dids
    assert any(0 < n < watched.dids for n in done)
    assert any(line["eta_s"] for line in progress if line["done"] < watched.dids)
    last = progress[-1]
    assert sum(last["by_status"].values()) == watched.dids and last["requests"] >= 60
    assert last["busiest_hosts"] and last["busiest_hosts"][0]["requests"] > 0
    assert last["rss"] > 10 << 20


def test_logs_are_structured(watched: WatchedJob) -> None:
    events = {e["event"] for e in watched.logs}
    assert {"job_started", "task_started", "did_done", "task_done", "job_finished"} <= events
    did_done = [e for e in watched.logs if e["event"] == "did_done"]
    assert len(did_done) == watched.dids
    for e in did_done:
        assert e["level"] == "debug" and e["job_id"] == "watched"
        assert e["did"].startswith("did:") and e["task_id"].startswith("task-")
        assert e["ts"].endswith("+00:00")
    assert all(e["host"] for e in did_done if e["status"] == "ok")
    finished = next(e for e in watched.logs if e["event"] == "job_finished")
    assert finished["status"] == "completed"
    assert sum(finished["by_status"].values()) == watched.dids


def test_log_level_filters(simnet: Server, tmp_path: Path) -> None:
    config = tmp_path / "job.yaml"
    config.write_text("log_level: warning\nprogress_interval: 0.2\n")
    result = run_job(simnet, tmp_path, "quiet", "--config", str(config), "--progress", "log")
    assert result.returncode == 0, result.stderr
    assert json_lines(result.stderr) == []  # no debug, info (progress included) below warning
    result = run_job(
        simnet, tmp_path, "info", "--progress", "log", env={"SKYFILL_LOG_LEVEL": "info"}
    )
    assert result.returncode == 0, result.stderr
    levels = {e["level"] for e in json_lines(result.stderr)}
    assert levels == {"info"}
    events = {e["event"] for e in json_lines(result.stderr)}
    assert {"job_started", "progress", "job_finished"} <= events


def test_bad_log_level_is_one_line(tmp_path: Path) -> None:
    result = run_cli("resume", "nope", "--workdir", str(tmp_path), "--log-level", "chatty")
    assert_one_line_error(result, 2, "chatty")

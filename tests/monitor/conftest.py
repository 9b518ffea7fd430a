"""A job run once for the monitoring tests, watched while it runs: its /metrics scrapes,
`skyfill monitor --once --json` while live, and its stderr (JSON logs and progress)."""

from __future__ import annotations

import signal
import subprocess
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.helpers import (
    CliProcess,
    Server,
    free_port,
    json_lines,
    run_args,
    run_cli,
    start_cli,
)

SLOW_FLAGS = ("--rate-limit", "10/1s")
"""Every host (the PLC directory too) at 10 requests/s: the 63 DIDs take ~6 s."""


@dataclass
class WatchedJob:
    workdir: Path
    job_id: str
    returncode: int
    stdout: str
    stderr: str
    dids: int
    scrapes: list[str] = field(default_factory=list)
    live_monitor: dict | None = None

    @property
    def logs(self) -> list[dict]:
        return json_lines(self.stderr)


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.read().decode()
    except OSError:
        return None


def start_job(net: Server, workdir: Path, job_id: str, *flags: str) -> CliProcess:
    return start_cli(
        *run_args(net, workdir, job_id, *flags),
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


def monitor_while_stopped(process: CliProcess, workdir: Path) -> dict:
    """`skyfill monitor --once --json` with the job held still (SIGSTOP, by its PID): the
    frame is of a running job however long the command takes to start on a busy machine.
    (A pause shorter than the job's HTTP timeouts: the job resumes as if nothing happened.)"""
    process.send_signal(signal.SIGSTOP)
    try:
        result = run_cli(
            "monitor", "watched", "--workdir", str(workdir), "--once", "--json", timeout=60
        )
    finally:
        process.send_signal(signal.SIGCONT)
    assert result.returncode == 0, result.stderr
    return json_lines(result.stdout)[0]


@pytest.fixture(scope="session")
def watched(simnet: Server, tmp_path_factory: pytest.TempPathFactory) -> WatchedJob:
    workdir = tmp_path_factory.mktemp("watched")
    port = free_port()
    # fmt: off
    process = start_job(
        simnet, workdir, "watched", *SLOW_FLAGS,
        "--progress", "log", "--progress-interval", "0.5", "--log-level", "debug",
        "--metrics-port", str(port), "--sample-interval", "0.5",
    )
    # fmt: on
    scrapes: list[str] = []
    live_monitor = None
    deadline = time.monotonic() + 90
    try:
        while process.poll() is None and time.monotonic() < deadline:
            text = scrape(f"http://127.0.0.1:{port}/metrics")
            if text and "skyfill_job_info" in text:
                scrapes.append(text)
                if live_monitor is None and "skyfill_requests_total{" in text:
                    live_monitor = monitor_while_stopped(process, workdir)
            time.sleep(0.3)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    dids = len(Path(simnet.ready["dids"]).read_text().split())
    return WatchedJob(
        workdir, "watched", process.returncode, stdout, stderr, dids, scrapes, live_monitor
    )

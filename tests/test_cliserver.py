"""The tests' way of running commands (tests/cliserver.py: forked from a process that
imported skyfill once) gives what `python -m skyfill` in a process of its own gives: the
same exit codes, output and errors, a failpoint's SIGKILL as -9, a timeout as
TimeoutExpired, the command's environment and working directory."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests import cliserver
from tests.helpers import SKYFILL, wait_until

LOCAL = ["--plc-url", "http://127.0.0.1:9", "--progress", "none"]
"""Nothing leaves this machine, should a command get as far as resolving a DID."""
CASES = [
    ["--version"],
    ["run", "--concurrency", "many"],  # click's usage error
    ["plan", "--dids", "/nonexistent/dids.txt"],  # skyfill's one-line error
    ["run", "--since", "soon", "--dids", "x"],
    ["status", "nojob", "--workdir", "."],
]


def _exec(argv: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SKYFILL, *argv], cwd=cwd, capture_output=True, text=True, env=env, timeout=120
    )


@pytest.mark.parametrize("argv", CASES, ids=lambda a: " ".join(a))
def test_a_forked_command_answers_as_one_of_its_own(argv: list[str], tmp_path: Path) -> None:
    env = {**os.environ}
    own = _exec(argv, tmp_path, env)
    forked = cliserver.server().run(argv, env, tmp_path, 120)
    assert (forked.returncode, forked.stdout, forked.stderr) == (
        own.returncode,
        own.stdout,
        own.stderr,
    )
    assert forked.args == [*SKYFILL, *argv]


def test_environment_working_directory_signal_and_timeout(tmp_path: Path) -> None:
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:abcdefghijklmnopqrstuvwx\n")
    # SKYFILL_CONCURRENCY from the command's environment, relative paths from its cwd
    env = {**os.environ, "SKYFILL_CONCURRENCY": "zero"}
    refused = cliserver.server().run(["plan", "--dids", "dids.txt"], env, tmp_path, 120)
    assert refused.returncode == 2 and "concurrency" in refused.stderr.lower(), refused
    planned = cliserver.server().run(["plan", "--dids", "dids.txt"], {**os.environ}, tmp_path, 120)
    assert planned.returncode == 0 and "1 DIDs" in planned.stdout, planned
    # a failpoint kills the command's process with SIGKILL: -9, as subprocess says it
    killed = cliserver.server().run(
        ["run", "--dids", "dids.txt", "--job-id", "k", "--workdir", "w", *LOCAL],
        {**os.environ, "SKYFILL_FAILPOINT": "job_submitted"},
        tmp_path,
        120,
    )
    assert killed.returncode == -9, killed
    # a command that outlives its timeout is killed and reported as subprocess does
    with pytest.raises(subprocess.TimeoutExpired):
        cliserver.server().run(
            ["run", "--dids", "dids.txt", "--job-id", "t", "--workdir", "w", *LOCAL],
            {**os.environ, "SKYFILL_FAILPOINT": "job_submitted:sleep=60"},
            tmp_path,
            2,
        )


def test_a_started_command_is_a_process_of_its_own_to_signal(tmp_path: Path) -> None:
    (tmp_path / "dids.txt").write_text("did:plc:abcdefghijklmnopqrstuvwx\n")
    env = {**os.environ, "SKYFILL_FAILPOINT": "job_submitted:sleep=60"}
    argv = ["run", "--dids", "dids.txt", "--job-id", "s", "--workdir", "w", *LOCAL]
    process = cliserver.server().start(
        argv, env, tmp_path, subprocess.PIPE, subprocess.PIPE, True, start_new_session=True
    )
    try:
        # its own session (so its own process group), as Popen(start_new_session=True)
        wait_until(lambda: os.getpgid(process.pid) == process.pid, timeout=30)
        wait_until(lambda: (tmp_path / "w" / "jobs" / "s").exists(), timeout=60)
        assert process.poll() is None
        process.send_signal(signal.SIGKILL)
        out, err = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == -signal.SIGKILL and process.poll() == -signal.SIGKILL
    assert out == "" and err.startswith("job s in ")

"""`skyfill slurm`: the sbatch array script, checked by bash and run as two array tasks."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from skyfill.engine.state.redis import RedisStateStore
from tests.distributed.test_workers import submit, wait_all
from tests.helpers import RedisServer, Server, records_by_did, run_cli, truth_records


def test_slurm_script_runs_the_job_as_an_array(
    network: Server, redis_server: RedisServer, tmp_path: Path
) -> None:
    shared = tmp_path / "shared"
    submit(network, redis_server, shared, "hpc", "--batch-size", "20")
    script = tmp_path / "hpc.sbatch"
    made = run_cli(
        "slurm", "hpc", "--state", redis_server.url, "--workers", "2", "--output", str(script)
    )
    assert made.returncode == 0, made.stderr
    text = script.read_text()
    assert "#SBATCH --array=0-1" in text and "worker --state" in text and "--job hpc" in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    # what Slurm would do: run the script once per array index
    tasks = [
        subprocess.Popen(
            ["bash", str(script)],
            env={**os.environ, "SLURM_ARRAY_JOB_ID": "77", "SLURM_ARRAY_TASK_ID": str(i)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    errors = wait_all(tasks)
    store = RedisStateStore.from_url(redis_server.url, "hpc")
    job = store.job()
    assert job is not None and str(job.status) == "completed", errors
    assert {w["worker_id"] for w in store.workers()} <= {"slurm-77-0", "slurm-77-1"}
    store.close()
    truth = truth_records(network.ready["truth_data"])
    got = records_by_did(shared, "hpc")
    assert {d: got.get(d, set()) for d in truth} == truth


def test_slurm_script_keeps_the_password_out(redis_server: RedisServer, tmp_path: Path) -> None:
    store = RedisStateStore.from_url(redis_server.url, "pw")
    store.create_job("pw", "t", "m:C", {}, [], [])
    store.register(str(tmp_path))
    store.close()
    secret_url = redis_server.url.replace("redis://", "redis://:s3cret@")
    script = tmp_path / "pw.sbatch"
    made = run_cli(
        "slurm", "pw", "--state", redis_server.url, "--workers", "3", "--output", str(script)
    )
    assert made.returncode == 0, made.stderr
    assert redis_server.url in script.read_text()
    # with a password in the URL the script asks for SKYFILL_STATE instead of holding it
    # (this server has no password, so the check of the job itself still works)
    made = run_cli("slurm", "pw", "--state", secret_url, "--workers", "3", "--output", str(script))
    assert made.returncode == 0, made.stderr
    assert "s3cret" not in script.read_text() + made.stdout + made.stderr
    assert "SKYFILL_STATE:?" in script.read_text()

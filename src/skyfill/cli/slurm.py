"""`skyfill slurm JOB_ID --workers N`: an sbatch array script that runs N workers of a job.

Each array task runs `skyfill worker --job JOB_ID` against the job's Redis and exits when
the job is done. A password in the Redis URL is never written into the script: the
script then takes the URL from SKYFILL_STATE in the environment of `sbatch`.
"""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path

import click

from skyfill import urls
from skyfill.cli import session
from skyfill.cli.distributed import state_option

TEMPLATE = """#!/bin/bash
# skyfill workers for job {job_id}: submit with `sbatch {script_name}`
#SBATCH --job-name=skyfill-{job_id}
#SBATCH --array=0-{last}
#SBATCH --cpus-per-task={cpus}
#SBATCH --mem={mem}
#SBATCH --time={time}
#SBATCH --output={log}
{partition}set -euo pipefail

{state_line}
exec {skyfill} worker --state "$SKYFILL_STATE" --job {job_id} \\
    --worker-id "slurm-${{SLURM_ARRAY_JOB_ID:-0}}-${{SLURM_ARRAY_TASK_ID:-0}}" \\
    --progress log{extra}
"""


def _skyfill_command() -> str:
    found = shutil.which("skyfill")
    if found:
        return shlex.quote(found)
    return f"{shlex.quote(sys.executable)} -m skyfill"


@click.command()
@click.argument("job_id")
@state_option(required=True)
@click.option("--workers", type=click.IntRange(min=1), required=True, help="Array size.")
@click.option("--output", type=click.Path(dir_okay=False, path_type=Path), help="Script path.")
@click.option("--cpus-per-task", type=click.IntRange(min=1), default=2, show_default=True)
@click.option("--mem", default="4G", show_default=True, help="Memory per worker (sbatch).")
@click.option("--time", "time_limit", default="24:00:00", show_default=True)
@click.option("--partition", help="Slurm partition (default: the cluster's).")
@click.option("--concurrency", type=click.IntRange(min=1), help="Concurrent fetches per worker.")
def slurm(
    job_id: str,
    state_url: str,
    workers: int,
    output: Path | None,
    cpus_per_task: int,
    mem: str,
    time_limit: str,
    partition: str | None,
    concurrency: int | None,
) -> None:
    """Write an sbatch array script that starts N workers for a submitted job."""
    session.check_job_id(job_id)
    with session.open_redis_job(state_url, job_id):
        pass  # the job must exist
    script = output or Path(f"skyfill-{job_id}.sbatch")
    has_password = urls.has_password(state_url)
    state_line = (
        ': "${SKYFILL_STATE:?export SKYFILL_STATE=<the Redis URL with its password> before sbatch}"'
        if has_password
        else f'SKYFILL_STATE="${{SKYFILL_STATE:-{state_url}}}"'
    )
    script.write_text(
        TEMPLATE.format(
            job_id=job_id,
            script_name=script.name,
            last=workers - 1,
            cpus=cpus_per_task,
            mem=mem,
            time=time_limit,
            log=f"skyfill-{job_id}-%A_%a.log",
            partition=f"#SBATCH --partition={partition}\n" if partition else "",
            state_line=state_line,
            skyfill=_skyfill_command(),
            extra=f" \\\n    --concurrency {concurrency}" if concurrency else "",
        )
    )
    script.chmod(0o755)
    click.echo(f"wrote {script}: `sbatch {script}` starts {workers} workers for job {job_id}")
    if has_password:
        click.echo("the Redis password is not in the script: export SKYFILL_STATE before sbatch")

"""A job's life outside a run: who runs it (liveness, from its heartbeat), and the status
changes made without a runner (a cancel or pause nobody is there to obey, a resume).

Every status change checks the transition table (engine/model.py) in the state store.
"""

from __future__ import annotations

import os
import socket
import time

from skyfill.engine.model import PHASE_AGGREGATE, JobStatus
from skyfill.engine.state.base import JobRecord, StateStore

STOPPING = {"cancel": JobStatus.CANCELLED, "pause": JobStatus.PAUSED}


def runner_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def is_live(job: JobRecord, stale_after: float = 5.0) -> bool:
    """Whether a runner is running the job now: on this host, its process exists;
    elsewhere, it beat the heartbeat within `stale_after` seconds (it beats every 0.5 s)."""
    if not job.status.active or not job.heartbeat_at:
        return False
    host, _, pid = (job.runner or "").rpartition(":")
    if host == socket.gethostname() and pid.isdigit():
        return _process_exists(int(pid))
    return time.time() - job.heartbeat_at < stale_after


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie (killed, not yet reaped) is not alive
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def stop_unattended(store: StateStore, action: str) -> JobStatus:
    """`cancel` or `pause` a job that no runner is running: it takes the status at once."""
    status = STOPPING[action]
    store.set_job_status(status)
    return status


def reopen(store: StateStore, job: JobRecord) -> None:
    """Ready a stopped or failed job for workers again: running, or aggregating when it
    stopped in the aggregate phase; any cancel/pause request is cleared."""
    store.request_control(None)
    store.set_job_status(
        JobStatus.AGGREGATING if job.phase == PHASE_AGGREGATE else JobStatus.RUNNING
    )

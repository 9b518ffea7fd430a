"""ManifestWriter: the one writer of the job's JSON manifests (atomic writes).

Every path inside a manifest is relative to the job directory, so a job directory can be
moved or copied (or live under another storage URL) without its manifests going stale.
Schemas: `engine/schemas/*.schema.json`; described in docs/manifests.md.
"""

from __future__ import annotations

import getpass
import socket
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from skyfill import __version__
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch
from skyfill.engine.planner import RetryPlan
from skyfill.storage import replica
from skyfill.storage.atomic import write_json

SCHEMA_VERSION = 1
_PACKAGE_DIR = Path(__file__).resolve().parents[1]


def utc_iso(timestamp: float | None = None) -> str:
    moment = datetime.fromtimestamp(timestamp if timestamp is not None else time.time(), tz=UTC)
    return moment.isoformat().replace("+00:00", "Z")


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=_PACKAGE_DIR, capture_output=True, text=True, timeout=5, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_provenance() -> dict[str, Any]:
    """The commit of the skyfill checkout this code runs from (None when installed
    elsewhere, so that another repository's HEAD is never recorded)."""
    top = _git("rev-parse", "--show-toplevel")
    if not top or not (Path(top) / "src" / "skyfill" / "__init__.py").exists():
        return {"git_commit": None, "git_dirty": None}
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"git_commit": _git("rev-parse", "HEAD"), "git_dirty": bool(status)}


class ManifestWriter:
    def __init__(self, layout: JobLayout) -> None:
        self._layout = layout

    def _relative(self, path: Path) -> str:
        return str(path.relative_to(self._layout.root))

    def job(
        self,
        *,
        job_type: str,
        handler: str,
        config: dict[str, Any],
        input_info: dict,
        batch_size: int,
        task_count: int,
        item_count: int,
        phases: list[str],
        status: str,
        submitted_at: float,
    ) -> None:
        write_json(
            self._layout.manifest,
            {
                "schema_version": SCHEMA_VERSION,
                "kind": "job",
                "job_id": self._layout.job_id,
                "job_type": job_type,
                "handler": handler,
                "skyfill_version": __version__,
                **git_provenance(),
                "config": config,
                "input": input_info,
                "batch_size": batch_size,
                "task_count": task_count,
                "item_count": item_count,
                "phases": phases,
                "status": status,
                "submitted_at": utc_iso(submitted_at),
                "submitted_by": f"{getpass.getuser()}@{socket.gethostname()}",
                "updated_at": utc_iso(submitted_at),
            },
        )

    def update_job(
        self,
        *,
        status: str | None = None,
        phases: list[str] | None = None,
        error: str | None = None,
    ) -> None:
        path = self._layout.manifest
        replica.refresh(path)
        data = orjson.loads(path.read_bytes())
        if status is not None:
            data["status"] = status
        if phases is not None:
            data["phases"] = phases
        if error is not None or status is not None:
            data["error"] = error
        data["updated_at"] = utc_iso()
        write_json(path, data)

    def task(self, task_id: str, info: dict[str, Any], result: dict[str, Any] | None) -> None:
        layout = self._layout
        batch = info.get("batch_id", "")
        write_json(
            layout.task_manifest(task_id),
            {
                "schema_version": SCHEMA_VERSION,
                "kind": "task",
                "job_id": layout.job_id,
                "task_id": task_id,
                "batch_id": batch,
                "role": info.get("role"),
                "phase": info.get("phase"),
                "group": info.get("grp"),
                "input": self._relative(layout.batch_file(batch)),
                "output_file": info.get("output_file"),
                "status": info.get("status"),
                "start_time": utc_iso(info["started_at"]) if info.get("started_at") else None,
                "end_time": utc_iso(info["finished_at"]) if info.get("finished_at") else None,
                "attempts": info.get("attempts"),
                "metrics": info.get("metrics") or {},
                "error": info.get("error"),
                "result": result,
            },
        )

    def retry(self, plan: RetryPlan, backoff_seconds: float) -> None:
        write_json(
            self._layout.retry_manifest(plan.round),
            {
                "schema_version": SCHEMA_VERSION,
                "kind": "retry",
                "job_id": self._layout.job_id,
                "retry_id": f"retry-{plan.round}",
                "phase": plan.phase,
                "group": plan.batches[0].group if plan.batches else None,
                "failed_tasks": plan.failed_tasks,
                "failed_items": plan.failed_items,
                "failed_count": len(plan.failed_items),
                "error_type_counts": plan.error_counts,
                "retries_launched": len(plan.failed_items),
                "tasks_launched": len(plan.tasks),
                "batches": [b.batch_id for b in plan.batches],
                "tasks": [t.task_id for t in plan.tasks],
                "backoff_seconds": backoff_seconds,
                "planned_at": utc_iso(),
            },
        )

    def aggregation(self, facts: dict[str, Any]) -> None:
        write_json(
            self._layout.aggregation / "manifest.json",
            {
                "schema_version": SCHEMA_VERSION,
                "kind": "aggregation",
                "job_id": self._layout.job_id,
                "written_at": utc_iso(),
                **facts,
            },
        )


def write_batch_files(layout: JobLayout, batches: list[Batch]) -> None:
    """One read-only JSON file per batch: the items it was planned with."""
    for batch in batches:
        write_json(
            layout.batch_file(batch.batch_id),
            {
                "batch_id": batch.batch_id,
                "phase": batch.phase,
                "group": batch.group,
                "items": list(batch.items),
            },
        )

"""Where a job's files live on disk (see DESIGN.md, 'Layout on disk')."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class JobLayout:
    workdir: Path
    job_id: str

    @property
    def root(self) -> Path:
        return self.workdir / "jobs" / self.job_id

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def state_db(self) -> Path:
        return self.root / "state.sqlite"

    @property
    def batches(self) -> Path:
        return self.root / "batches"

    def batch_file(self, batch_id: str) -> Path:
        return self.batches / f"{batch_id}.json"

    def task_dir(self, task_id: str) -> Path:
        return self.root / "tasks" / task_id

    def task_output(self, task_id: str) -> Path:
        return self.task_dir(task_id) / f"{task_id}.parquet"

    def task_done(self, task_id: str) -> Path:
        return self.task_dir(task_id) / f"{task_id}.done"

    def task_manifest(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "manifest.json"

    def segments_dir(self, task_id: str) -> Path:
        return self.task_dir(task_id) / "segments"

    def retry_manifest(self, round_: int) -> Path:
        return self.root / "retries" / f"retry-{round_}" / "manifest.json"

    @property
    def aggregation(self) -> Path:
        return self.root / "aggregation"

    @property
    def output(self) -> Path:
        return self.root / "output"


def jobs_in(workdir: Path) -> list[str]:
    """Job ids that have a job directory under `workdir`, sorted."""
    jobs = workdir / "jobs"
    if not jobs.is_dir():
        return []
    return sorted(p.name for p in jobs.iterdir() if (p / "state.sqlite").exists())

"""Hierarchical reduction on disk: merge sorted Parquet files, `fan_in` at a time, level
after level, until at most `fan_in` remain; crash-safe and resumable (each output has its
`.done` marker naming its inputs and their versions).
"""

from __future__ import annotations

import concurrent.futures
import os
from dataclasses import dataclass
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.failpoints import failpoint
from skyfill.storage import columnar
from skyfill.storage.atomic import commit_file, sha256_file, tmp_path, validate_parquet, write_bytes
from skyfill.storage.merge import MergeSpec, merge_stream


@dataclass
class MergeLevel:
    level: int
    outputs: list[dict]
    """Each {"file", "inputs": [...], "rows", "sha256"}; paths relative to the merge
    directory (the caller's files as `../...`)."""


def reduce_to_fan_in(
    inputs: list[Path], directory: Path, spec: MergeSpec, schema: pa.Schema
) -> tuple[list[Path], list[MergeLevel]]:
    """Merge consecutive inputs, `fan_in` at a time, level after level, to <= fan_in files.

    Level n writes `directory/level-<n>/merge-<i>.parquet` and returns the remaining files
    (in input order) and a description of each level. Only as many groups are merged as
    needed: a group of one file is carried to the next level as it is, and once one
    level can reach `fan_in` files, only enough leading groups are merged to get there.

    Each output is written to a temporary name, validated (reopened, row count equals the
    rows written), renamed, hashed, and only then gets its `merge-<i>.done` marker (JSON:
    sha256, rows, inputs and their versions). Resumable: called again after a crash
    (kill -9 at any point), an output is reused without recomputation when its marker
    exists, names the same inputs in the same versions (sha256 for outputs of earlier
    levels, size and mtime for the caller's files) and matches the file's row count;
    partial and temporary files are ignored and overwritten; the result is identical.
    File names depend only on the number of inputs and on fan_in. `spec.workers` merges
    of a level run at once; the result does not depend on it.
    """
    directory = Path(directory)
    files = [Path(p) for p in inputs]
    versions: dict[Path, str] = {}  # outputs made or reused here: their content hash
    levels: list[MergeLevel] = []
    while len(files) > spec.fan_in:
        level = len(levels) + 1
        merged: list[Path] = []
        jobs: list[_MergeJob] = []
        for group in _plan_level(files, spec.fan_in):
            if len(group) == 1:
                merged.append(group[0])
                continue
            target = directory / f"level-{level}" / f"merge-{len(jobs):05d}.parquet"
            inputs_at = [versions.get(p) or _file_version(p) for p in group]
            jobs.append(_MergeJob(group, inputs_at, target, directory, spec, schema))
            merged.append(target)
        outputs = _run(jobs, spec.workers)
        versions |= {
            job.target: f"sha256:{out['sha256']}" for job, out in zip(jobs, outputs, strict=True)
        }
        levels.append(MergeLevel(level=level, outputs=outputs))
        files = merged
    return files, levels


def _plan_level(files: list[Path], fan_in: int) -> list[list[Path]]:
    """Consecutive groups for one level; files left alone come as groups of one."""
    n = len(files)
    if n > fan_in * fan_in:
        merged = n
    else:
        needed = n - fan_in  # each merge of g files removes g - 1 of them
        full, rest = divmod(needed, fan_in - 1)
        merged = full * fan_in + (rest + 1 if rest else 0)
    groups = [files[i : min(i + fan_in, merged)] for i in range(0, merged, fan_in)]
    return groups + [[f] for f in files[merged:]]


def _file_version(path: Path) -> str:
    """A cheap identity of a caller's input file (they are written once, never changed)."""
    stat = path.stat()
    return f"size:{stat.st_size},mtime_ns:{stat.st_mtime_ns}"


@dataclass(frozen=True, slots=True)
class _MergeJob:
    group: list[Path]
    versions: list[str]
    target: Path
    directory: Path
    spec: MergeSpec
    schema: pa.Schema

    def run(self) -> dict:
        """Merge the group into the target unless an earlier call did; return its facts."""
        identity = {
            "inputs": [_relative(p, self.directory) for p in self.group],
            "input_versions": self.versions,
        }
        done = self.target.with_suffix(".done")
        facts = _reusable(self.target, done, identity)
        if facts is None:
            rows = _write_merged(self.group, self.target, self.spec, self.schema)
            facts = {"rows": rows, "sha256": sha256_file(self.target)}
            write_bytes(done, orjson.dumps(identity | facts, option=orjson.OPT_SORT_KEYS))
        return {
            "file": _relative(self.target, self.directory),
            "inputs": identity["inputs"],
            **facts,
        }


def _run(jobs: list[_MergeJob], workers: int) -> list[dict]:
    """Run the merges of one level, `workers` at a time; results in the jobs' order."""
    if workers <= 1 or len(jobs) <= 1:
        return [job.run() for job in jobs]
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="skyfill-merge") as pool:
        return list(pool.map(_MergeJob.run, jobs))


def _reusable(target: Path, done: Path, identity: dict) -> dict | None:
    """The facts of an output finished by an earlier call, or None if it must be made."""
    try:
        marker = orjson.loads(done.read_bytes())
        rows = pq.ParquetFile(target).metadata.num_rows
    except (OSError, orjson.JSONDecodeError, pa.ArrowException):
        return None
    if not isinstance(marker, dict) or any(marker.get(k) != v for k, v in identity.items()):
        return None
    if marker.get("rows") != rows or not isinstance(marker.get("sha256"), str):
        return None
    return {"rows": rows, "sha256": marker["sha256"]}


def _write_merged(group: list[Path], target: Path, spec: MergeSpec, schema: pa.Schema) -> int:
    """Merge `group` into `target` through a validated temporary file; return its rows."""
    target.parent.mkdir(parents=True, exist_ok=True)
    for stray in target.parent.glob(f".{target.name}.*tmp"):  # left by a crashed merge
        stray.unlink(missing_ok=True)
    tmp = tmp_path(target)
    rows = 0
    with columnar.writer(tmp, schema, columnar.INTERMEDIATE) as writer:
        for batch in merge_stream(group, spec, schema):
            writer.write_batch(batch, row_group_size=batch.num_rows)  # one row group
            rows += batch.num_rows
    validate_parquet(tmp, rows)
    commit_file(tmp, target)
    failpoint("merge_written")
    return rows


def _relative(path: Path, directory: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(path), os.path.abspath(directory))).as_posix()

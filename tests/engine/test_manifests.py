"""Every manifest a job writes matches its documented JSON Schema, and the files agree.

Real jobs run through the CLI against the simulated network: a plain one (several tasks,
a hierarchical aggregation) and one whose DIDs fail retryably (retry phases). Each
manifest.json under the job directory is validated against
`skyfill/engine/schemas/<kind>.schema.json` (docs/manifests.md), with format checking;
then facts that span files are checked (counts, hashes, `.done` markers, row totals).
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from skyfill.engine.schemas import KINDS, schema
from skyfill.engine.settings import EngineSettings
from tests.helpers import Server, job_dir, run_cli, start_simnet

FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    """RFC 3339 date-time (jsonschema checks it only with an optional extra installed)."""
    if not isinstance(value, str):
        return True
    return datetime.fromisoformat(value).tzinfo is not None


def _validator(kind: str) -> Draft202012Validator:
    return Draft202012Validator(schema(kind), format_checker=FORMATS)


def _errors(kind: str, manifest: dict) -> list[str]:
    return [
        f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
        for e in _validator(kind).iter_errors(manifest)
    ]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _kind_of(relative: Path) -> str:
    """The manifest kind that lives at `relative` (to the job directory)."""
    parts = relative.parts
    if parts == ("manifest.json",):
        return "job"
    if len(parts) == 3 and parts[0] == "tasks":
        return "task"
    if len(parts) == 3 and parts[0] == "retries" and re.fullmatch(r"retry-[1-9]\d*", parts[1]):
        return "retry"
    if parts == ("aggregation", "manifest.json"):
        return "aggregation"
    raise AssertionError(f"a manifest where none belongs: {relative}")


@dataclass
class Job:
    """A finished job's directory and its manifests, read back."""

    root: Path
    job: dict
    tasks: dict[str, dict]
    retries: dict[str, dict]
    aggregation: dict

    @classmethod
    def load(cls, root: Path) -> Job:
        manifests: dict[str, dict[Path, dict]] = {kind: {} for kind in KINDS}
        for path in sorted(root.rglob("manifest.json")):
            relative = path.relative_to(root)
            manifests[_kind_of(relative)][relative] = json.loads(path.read_bytes())
        assert len(manifests["job"]) == 1 and len(manifests["aggregation"]) == 1
        return cls(
            root=root,
            job=next(iter(manifests["job"].values())),
            tasks={p.parts[1]: m for p, m in manifests["task"].items()},
            retries={p.parts[1]: m for p, m in manifests["retry"].items()},
            aggregation=next(iter(manifests["aggregation"].values())),
        )

    def all_manifests(self) -> Iterator[tuple[str, str, dict]]:
        """(kind, where, manifest) for every manifest of the job."""
        yield "job", "manifest.json", self.job
        for task_id, manifest in self.tasks.items():
            yield "task", f"tasks/{task_id}/manifest.json", manifest
        for retry_id, manifest in self.retries.items():
            yield "retry", f"retries/{retry_id}/manifest.json", manifest
        yield "aggregation", "aggregation/manifest.json", self.aggregation

    def phase_tasks(self, phase: str) -> dict[str, dict]:
        return {t: m for t, m in self.tasks.items() if m["phase"] == phase}


def _run_job(net: Server, workdir: Path, job_id: str, *flags: str) -> Job:
    result = run_cli(
        "run",
        "--dids",
        net.ready["dids"],
        "--workdir",
        str(workdir),
        "--job-id",
        job_id,
        "--plc-url",
        net.ready["plc"],
        "--allow-private-network",
        "--progress",
        "none",
        *flags,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return Job.load(job_dir(workdir, job_id))


@pytest.fixture(scope="module")
def plain_job(simnet: Server, tmp_path_factory: pytest.TempPathFactory) -> Job:
    """Several tasks and more task files than the fan-in: the aggregation (streamed, not in
    memory) has levels."""
    workdir = tmp_path_factory.mktemp("manifests-plain")
    flags = ("--batch-size", "15", "--fan-in", "2", "--merge-in-memory", "0")
    flags = (*flags, "--retries", "1", "--retry-backoff", "0.1")
    return _run_job(simnet, workdir, "plain", *flags)


@pytest.fixture(scope="module")
def faulty_net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A network where one repo serves 503s for a while and one hangs."""
    server = start_simnet(
        tmp_path_factory.mktemp("manifests-faulty"), accounts=20, faults="flaky_503,hang"
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def retried_job(faulty_net: Server, tmp_path_factory: pytest.TempPathFactory) -> Job:
    """One try per DID within a task, then two retry phases for what failed retryably."""
    workdir = tmp_path_factory.mktemp("manifests-retried")
    flags = ("--attempts", "1", "--retries", "2", "--retry-backoff", "0.1", "--timeout", "1")
    job = _run_job(faulty_net, workdir, "retried", "--batch-size", "8", *flags)
    assert sorted(job.retries) == ["retry-1", "retry-2"], "the hanging DID should be retried"
    return job


@pytest.fixture(params=["plain_job", "retried_job"])
def any_job(request: pytest.FixtureRequest) -> Job:
    return request.getfixturevalue(request.param)


# -- the schemas themselves ----------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_schemas_are_valid_draft_2020_12(kind: str) -> None:
    loaded = schema(kind)
    assert loaded["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(loaded)
    assert loaded["properties"]["kind"] == {"const": kind}
    assert loaded is not schema(kind), "schema() hands out copies"


def test_unknown_kind_is_refused() -> None:
    with pytest.raises(ValueError, match="no schema"):
        schema("result")


# -- every manifest on disk validates ----------------------------------------------------


def test_every_manifest_validates(any_job: Job) -> None:
    seen = 0
    for kind, where, manifest in any_job.all_manifests():
        assert manifest["kind"] == kind, where
        assert manifest["job_id"] == any_job.job["job_id"], where
        assert _errors(kind, manifest) == [], where
        seen += 1
    assert seen == len(list(any_job.root.rglob("manifest.json")))


@pytest.fixture(scope="module")
def retried_by_hand(
    faulty_net: Server, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Job, Job]:
    """A job without retry phases, then `skyfill retry --failed`: (before, after)."""
    workdir = tmp_path_factory.mktemp("manifests-retry-failed")
    flags = ("--attempts", "1", "--retries", "0", "--timeout", "1")
    before = _run_job(faulty_net, workdir, "again", *flags)
    assert before.retries == {} and _failed_items(before), "the hanging DID should fail"
    result = run_cli("retry", "again", "--failed", "--workdir", str(workdir), "--progress", "none")
    assert result.returncode == 0, result.stderr[-3000:]
    return before, Job.load(before.root)


def test_manifests_after_retry_failed_validate(retried_by_hand: tuple[Job, Job]) -> None:
    """`skyfill retry --failed` writes a retry manifest (no backoff) and aggregates again."""
    before, job = retried_by_hand
    assert list(job.retries) == ["retry-1"]
    retry = job.retries["retry-1"]
    assert retry["backoff_seconds"] == 0
    assert set(retry["failed_items"]) == _failed_items(before)
    assert sorted(retry["tasks"]) == sorted(job.phase_tasks("retry_1"))
    for kind, where, manifest in job.all_manifests():
        assert _errors(kind, manifest) == [], where
    assert _time(job.aggregation["written_at"]) > _time(before.aggregation["written_at"])
    assert len(job.aggregation["input_files"]) == len(job.tasks)


def test_job_manifest_lists_the_phases_retry_failed_added(
    retried_by_hand: tuple[Job, Job],
) -> None:
    _, job = retried_by_hand
    assert "retry_1" in job.job["phases"]


def _failed_items(job: Job) -> set[str]:
    table = pq.read_table(job.root / "output" / "repos.parquet", columns=["did", "status"])
    return {r["did"] for r in table.to_pylist() if r["status"] == "failed"}


# -- facts across files ------------------------------------------------------------------


def test_job_manifest_agrees_with_its_tasks(any_job: Job) -> None:
    job = any_job.job
    backfill = any_job.phase_tasks("backfill")
    assert job["task_count"] == len(backfill)
    assert job["status"] == "completed"
    assert job["config"]["job_id"] == job["job_id"]
    assert job["config"]["batch_size"] == job["batch_size"]
    retries = [f"retry_{k}" for k in range(1, job["config"]["retries"] + 1)]
    assert job["phases"] == ["backfill", *retries, "aggregate"]
    assert job["input"]["dids"] == job["item_count"]
    assert (
        sum(len(_batch(any_job.root, m)["items"]) for m in backfill.values()) == job["item_count"]
    )
    launched = sum(r["retries_launched"] for r in any_job.retries.values())
    processed = sum(m["metrics"]["dids_processed"] for m in any_job.tasks.values())
    assert processed == job["item_count"] + launched
    submitted = _time(job["submitted_at"])
    assert submitted <= _time(job["updated_at"])
    assert all(submitted <= _time(m["start_time"]) for m in any_job.tasks.values())


def _batch(root: Path, task: dict) -> dict:
    return json.loads((root / task["input"]).read_bytes())


def test_task_results_match_their_files_and_done_markers(any_job: Job) -> None:
    for task_id, task in any_job.tasks.items():
        result = task["result"]
        directory = any_job.root / "tasks" / task_id
        parquet = directory / f"{task_id}.parquet"
        assert result["file"] == task["output_file"]
        assert task["output_file"] == f"tasks/{task_id}/{task_id}.parquet"
        assert (any_job.root / task["output_file"]) == parquet
        done = (directory / f"{task_id}.done").read_text()
        assert done.strip() == result["sha256"] == _sha256(parquet), task_id
        assert pq.ParquetFile(parquet).metadata.num_rows == result["row_count"]
        assert task["metrics"]["records"] == result["row_count"], task_id
        batch = _batch(any_job.root, task)
        assert batch["batch_id"] == task["batch_id"] and batch["group"] == task["group"]
        assert task["metrics"]["dids_processed"] == len(batch["items"])
        assert {"api_requests", "bytes"} <= set(task["metrics"]), "the backfill's own metrics"
        start, end = _time(task["start_time"]), _time(task["end_time"])
        assert start <= end <= _time(result["written_at"])
        assert _time(result["written_at"]) <= _time(any_job.aggregation["written_at"])


def test_phase_group_and_ids_agree(any_job: Job) -> None:
    for task_id, task in any_job.tasks.items():
        assert task["role"] == "worker"
        if task["phase"] == "backfill":
            assert (task["group"], task_id[:5]) == ("initial_batch", "task-")
            continue
        k = task["phase"].removeprefix("retry_")
        assert task["group"] == f"retry_batch_{k}"
        assert task_id.startswith(f"retry{k}-task-")
        assert task["batch_id"].startswith(f"retry{k}-batch-")


def test_retry_manifests_agree_with_their_phases(any_job: Job) -> None:
    previous_items: set[str] | None = None
    previous_tasks = set(any_job.phase_tasks("backfill"))
    for k in range(1, len(any_job.retries) + 1):
        retry = any_job.retries[f"retry-{k}"]
        assert retry["retry_id"] == f"retry-{k}"
        assert (retry["phase"], retry["group"]) == (f"retry_{k}", f"retry_batch_{k}")
        assert retry["phase"] in any_job.job["phases"]
        items = retry["failed_items"]
        assert sum(retry["error_type_counts"].values()) == retry["failed_count"] == len(items)
        assert retry["retries_launched"] == retry["failed_count"]
        assert set(retry["failed_tasks"]) <= previous_tasks
        if previous_items is not None:
            assert set(items) <= previous_items, "only what still failed is retried again"
        tasks = any_job.phase_tasks(retry["phase"])
        assert sorted(retry["tasks"]) == sorted(tasks)
        assert sorted(m["batch_id"] for m in tasks.values()) == sorted(retry["batches"])
        assert sorted(
            i for m in tasks.values() for i in _batch(any_job.root, m)["items"]
        ) == sorted(items)
        planned = _time(retry["planned_at"])
        assert all(_time(m["start_time"]) >= planned for m in tasks.values())
        ended = [_time(any_job.tasks[t]["end_time"]) for t in retry["failed_tasks"]]
        assert all(end <= planned for end in ended)
        previous_items, previous_tasks = set(items), set(tasks)


def test_aggregation_manifest_agrees_with_the_output(any_job: Job) -> None:
    agg, root = any_job.aggregation, any_job.root
    records = ds.dataset(root / "output" / "records", format="parquet", partitioning="hive")
    assert agg["total_rows"] == records.count_rows()
    repos = pq.ParquetFile(root / "output" / "repos.parquet").metadata.num_rows
    assert agg["repos"] == repos == any_job.job["item_count"]
    tasks = any_job.tasks
    assert sorted(agg["input_files"]) == sorted(m["output_file"] for m in tasks.values())
    assert all((root / f).with_suffix(".done").exists() for f in agg["input_files"])
    by_batch = {m["batch_id"]: m["result"]["row_count"] for m in tasks.values()}
    assert agg["row_counts_by_batch"] == by_batch
    assert agg["input_rows"] == sum(by_batch.values()) >= agg["total_rows"]
    assert agg["fan_in"] == EngineSettings.from_config(any_job.job["config"]).fan_in
    lines = []
    for described in agg["output_files"]:
        path = root / "output" / described["file"]
        assert described["sha256"] == _sha256(path), described["file"]
        assert described["rows"] == pq.ParquetFile(path).metadata.num_rows
        lines.append(f"{described['file']}:{described['sha256']}\n")
    written = {p.relative_to(root / "output").as_posix() for p in root.glob("output/**/*.parquet")}
    assert {f["file"] for f in agg["output_files"]} == written
    assert agg["output_hash"] == hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()
    assert _time(agg["written_at"]) <= _time(any_job.job["updated_at"])


def test_aggregation_levels_describe_the_merge_tree(plain_job: Job) -> None:
    """Each merge reads task files or earlier merges, each once; at most fan_in are left."""
    agg = plain_job.aggregation
    fan_in = agg["fan_in"]
    assert len(agg["input_files"]) > fan_in, "the fixture should need merge levels"
    assert [level["level"] for level in agg["levels"]] == list(range(1, len(agg["levels"]) + 1))
    files = {m["batch_id"]: m["output_file"] for m in plain_job.tasks.values()}
    rows = {f"../../{files[b]}": n for b, n in agg["row_counts_by_batch"].items()}
    unread = set(rows)
    for level in agg["levels"]:
        for output in level["outputs"]:
            assert output["file"].startswith(f"level-{level['level']}/")
            assert set(output["inputs"]) <= unread, "a file merged twice, or an unknown one"
            unread -= set(output["inputs"])
            assert output["rows"] <= sum(rows[i] for i in output["inputs"])
            rows[output["file"]] = output["rows"]
            unread.add(output["file"])
        assert len(level["outputs"]) >= 1
    assert len(unread) <= fan_in
    assert sum(rows[f] for f in unread) >= agg["total_rows"]


# -- the schemas reject what the writer must not write ------------------------------------

Mutation = Callable[[dict], None]


def _set(*path: str | int, value: object) -> Mutation:
    def mutate(manifest: dict) -> None:
        target = manifest
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return mutate


def _drop(key: str) -> Mutation:
    return lambda manifest: manifest.pop(key)


BAD = {
    "job: task_count as text": ("job", _set("task_count", value="7")),
    "job: unknown key": ("job", _set("colour", value="blue")),
    "job: unknown status": ("job", _set("status", value="done")),
    "job: missing job_id": ("job", _drop("job_id")),
    "job: time not in UTC Z": ("job", _set("submitted_at", value="2026-11-25T01:16:30+00:00")),
    "job: phase name": ("job", _set("phases", value=["backfill", "retry-1", "aggregate"])),
    "job: short git commit": ("job", _set("git_commit", value="fb82bdb")),
    "job: backfill config lacks dids_file": ("job", lambda m: m["config"].pop("dids_file")),
    "task: unknown key": ("task", _set("worker_host", value="x")),
    "task: unknown key in result": ("task", _set("result", "rows", value=1)),
    "task: row_count as text": ("task", _set("result", "row_count", value="12")),
    "task: negative row_count": ("task", _set("result", "row_count", value=-1)),
    "task: sha256 not hex": ("task", _set("result", "sha256", value="Z" * 64)),
    "task: sha256 too short": ("task", _set("result", "sha256", value="ab" * 16)),
    "task: done without result": ("task", _set("result", value=None)),
    "task: unknown role": ("task", _set("role", value="boss")),
    "task: group of another phase": ("task", _set("group", value="retry_batch_1")),
    "task: impossible date": ("task", _set("start_time", value="2026-02-30T00:00:00Z")),
    "task: metric as text": ("task", _set("metrics", "records", value="many")),
    "retry: retry_id spelled as phase": ("retry", _set("retry_id", value="retry_1")),
    "retry: count as text": ("retry", _set("error_type_counts", "timeout", value="1")),
    "retry: unknown key": ("retry", _set("note", value="x")),
    "retry: no failed items": ("retry", _set("failed_items", value=[])),
    "aggregation: total_rows as text": ("aggregation", _set("total_rows", value="12")),
    "aggregation: missing input_files": ("aggregation", _drop("input_files")),
    "aggregation: negative row count": (
        "aggregation",
        lambda m: m["row_counts_by_batch"].update({"batch-0000": -1}),
    ),
    "aggregation: unknown key in an output file": (
        "aggregation",
        lambda m: m["output_files"][0].update({"colour": "blue"}),
    ),
    "aggregation: unknown key in a merge level": (
        "aggregation",
        lambda m: m["levels"][0].update({"colour": "blue"}),
    ),
    "aggregation: output_hash not hex": ("aggregation", _set("output_hash", value="x" * 64)),
}


def _real(job: Job, kind: str) -> dict:
    if kind == "job":
        return job.job
    if kind == "task":
        return job.tasks["task-0000"]
    if kind == "retry":
        return job.retries["retry-1"]
    return job.aggregation


@pytest.mark.parametrize("case", list(BAD))
def test_schemas_reject_a_wrong_manifest(case: str, plain_job: Job, retried_job: Job) -> None:
    kind, mutate = BAD[case]
    real = _real(retried_job if kind == "retry" else plain_job, kind)
    assert _errors(kind, real) == []
    manifest = copy.deepcopy(real)
    mutate(manifest)
    assert _errors(kind, manifest), f"{case}: accepted"


def test_aggregation_is_open_to_handler_facts(plain_job: Job) -> None:
    """The handler's facts sit beside the engine's keys: unknown top-level keys pass."""
    manifest = copy.deepcopy(plain_job.aggregation) | {"sketch_of_dids": "..."}
    assert _errors("aggregation", manifest) == []

"""A second job type = one handler + one JobDefinition YAML; the CLI resumes it like any job."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from skyfill.engine.definition import load_definition
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import JobStatus
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.sqlite import SqliteStateStore
from skyfill.errors import UsageError
from tests.engine.squares import SquaresHandler
from tests.helpers import run_cli

HERE = Path(__file__).parent
REPO = HERE.parents[1]


def test_definition_names_the_handler_and_its_config() -> None:
    definition = load_definition(HERE / "squares.yaml")
    assert (definition.job_type, definition.handler) == (
        "squares",
        "tests.engine.squares:SquaresHandler",
    )
    handler = definition.create_handler()
    assert isinstance(handler, SquaresHandler) and handler.count == 30
    assert definition.create_handler({"count": 3}).count == 3


def test_stopped_squares_job_is_resumed_by_the_cli(tmp_path: Path) -> None:
    handler = load_definition(HERE / "squares.yaml").create_handler()
    layout = JobLayout(tmp_path, "squares-1")
    store = SqliteStateStore(layout.state_db)
    runner = JobRunner(handler, layout, store, EngineSettings.from_config(handler.config_dict()))
    runner.submit(handler.plan())
    handler._stop, handler._stop_after = runner.stop_requested, 9
    assert asyncio.run(runner.run()).status is JobStatus.STOPPED
    store.close()

    result = run_cli(
        "resume", "squares-1", "--workdir", str(tmp_path), "--progress", "none", cwd=REPO
    )
    assert result.returncode == 0, result.stderr
    assert "squares" in result.stdout
    table = pq.read_table(layout.output / "all.parquet")
    assert table.num_rows == sum(n for n in range(1, 31) if n % 7)
    status = json.loads(
        run_cli("status", "squares-1", "--workdir", str(tmp_path), "--json", cwd=REPO).stdout
    )
    assert status["job_type"] == "squares" and status["status"] == "completed"
    assert status["by_status"] == {"ok": 26, "failed": 4}


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("job_type: x\n", "needs `job_type` and `handler`"),
        ("job_type: x\nhandler: no.such.module:Thing\n", "cannot load handler"),
        ("job_type: x\nhandler: nocolon\n", "want module:Class"),
    ],
)
def test_bad_definitions(tmp_path: Path, content: str, needle: str) -> None:
    path = tmp_path / "def.yaml"
    path.write_text(content)
    with pytest.raises(UsageError, match=needle):
        load_definition(path).create_handler()

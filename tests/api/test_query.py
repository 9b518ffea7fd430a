"""`skyfill query JOB SQL`: DuckDB over a finished job's dataset, through the CLI; and the
one line it says without DuckDB."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

import skyfill
from tests.api.conftest import statuses, stored_records
from tests.helpers import Server, assert_one_line_error, run_cli

PER_COLLECTION = "select collection, count(*) as n from records group by 1 order by 1"


@pytest.fixture(scope="module")
def workdir(apinet: Server, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A workdir with the finished job `q` of the whole network."""
    workdir = tmp_path_factory.mktemp("query")
    skyfill.backfill(
        apinet.ready["dids"],
        workdir=workdir,
        job_id="q",
        plc_url=apinet.ready["plc"],
        allow_private_network=True,
        progress="none",
    )
    return workdir


def _per_collection(net: Server) -> dict[str, int]:
    return dict(
        Counter(path.split("/")[0] for recs in stored_records(net).values() for path in recs)
    )


def test_csv_gives_the_networks_numbers(apinet: Server, workdir: Path) -> None:
    result = run_cli("query", "q", PER_COLLECTION, "--workdir", str(workdir), "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows[0] == ["collection", "n"]
    assert {name: int(n) for name, n in rows[1:]} == _per_collection(apinet)
    result = run_cli(
        "query",
        str(workdir / "jobs" / "q" / "output"),  # an output directory, not a job id
        "select status, count(*) from repos group by status",
        "--format",
        "json",
    )
    assert result.returncode == 0, result.stderr
    counts = {
        row["status"]: row["count_star()"]
        for row in map(json.loads, result.stdout.split("\n")[:-1])
    }
    assert counts == statuses(apinet)


def test_the_table_aligns_the_numbers(apinet: Server, workdir: Path) -> None:
    result = run_cli("query", "q", PER_COLLECTION, "--workdir", str(workdir))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    expected = sorted(_per_collection(apinet).items())
    assert lines[0].split() == ["collection", "n"]
    assert [line.split() for line in lines[2:-1]] == [[c, str(n)] for c, n in expected]
    assert len({len(str(n)) for _, n in expected}) > 1  # so that alignment shows:
    assert len({len(line) for line in lines[2:-1]}) == 1  # numbers to the right
    assert lines[-1] == f"({len(expected)} rows)"


def test_bad_queries_and_jobs_are_one_line(workdir: Path) -> None:
    bad_sql = run_cli("query", "q", "select nope from records", "--workdir", str(workdir))
    assert_one_line_error(bad_sql, 2, "query: Binder Error", "nope")
    no_job = run_cli("query", "zz", "select 1", "--workdir", str(workdir))
    assert_one_line_error(no_job, 2, "no job zz")


def test_without_duckdb_one_line_and_exit_2(workdir: Path) -> None:
    """DuckDB made unimportable (sys.modules["duckdb"] = None) in a process of its own."""
    script = (
        "import sys; sys.modules['duckdb'] = None; "
        "sys.argv = ['skyfill', 'query', 'q', 'select 1', '--workdir', sys.argv[1]]; "
        "from skyfill.cli.main import main; main()"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(workdir)],
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ),
        check=False,
    )
    assert_one_line_error(result, 2, "needs DuckDB", "pip install 'skyfill[query]'")
    assert result.stderr.count("\n") == 1 and result.stdout == ""

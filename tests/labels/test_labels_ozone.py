"""`skyfill labels` against the reference Ozone labeler (labeler.mjs: 24 labels, plain, on
records, expiring, negated, expired, re-applied): followed until live into SQLite,
PostgreSQL and a Parquet log (then compacted), `labels_current` is exactly the truth's
`current`; negated labels are rows with neg but never current; expired ones keep their
`exp` and are not current; every signature verified with the DID document's key; a rerun
changes nothing; a run killed (SIGKILL) mid-way and started again ends exact."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import psycopg
import pyarrow.parquet as pq
import pytest

from tests.helpers import Server, json_lines, run_cli

pytestmark = pytest.mark.refpds

Row = tuple[str, str, str | None, str, str, str | None]


def labels_args(ozone: Server, work: Path, sink: str, *flags: str) -> list[str]:
    return [
        "labels",
        "--from-labeler", ozone.ready["labeler"],
        "--sink", sink,
        "--workdir", str(work),
        "--plc-url", ozone.ready["plc"],
        "--allow-private-network",
        "--until-live",
        "--progress", "none",
        *flags,
    ]  # fmt: skip


def truth_rows(labels: list[dict[str, Any]]) -> set[Row]:
    return {(t["src"], t["uri"], t.get("cid"), t["val"], t["cts"], t.get("exp")) for t in labels}


def sql_rows(fetch: Any, table: str, where: str = "") -> set[Row]:
    return set(fetch(f"SELECT src, uri, cid, val, cts, exp FROM {table} {where}"))


def done_facts(stderr: str) -> dict[str, Any]:
    return next(line for line in json_lines(stderr) if line.get("event") == "labels_done")


def check_against_truth(fetch: Any, truth: dict[str, Any]) -> None:
    assert sql_rows(fetch, "labels_current") == truth_rows(truth["current"])
    negated = truth_rows(truth["negated"])
    assert sql_rows(fetch, "labels", "WHERE neg") == negated
    expired = truth_rows(truth["expired"])
    assert all(row[5] for row in expired)
    assert expired <= sql_rows(fetch, "labels", "WHERE NOT neg")  # kept, with their exp
    assert len(sql_rows(fetch, "labels")) == len(truth["stream"])


def test_until_live_into_sqlite_equals_the_truth_and_a_rerun_changes_nothing(
    ozone: Server, tmp_path: Path
) -> None:
    truth = ozone.ready["truth_data"]
    db, work = tmp_path / "labels.db", tmp_path / "work"
    done = run_cli(*labels_args(ozone, work, f"sqlite:///{db}"))
    assert done.returncode == 0, done.stderr
    head = max(item["seq"] for item in truth["stream"])
    assert " live: " in done.stdout and f"cursor {head}" in done.stdout
    facts = done_facts(done.stderr)
    assert facts["labels_applied"] == len(truth["stream"]) and facts["labels_refused"] == 0
    assert facts["labelers"][0]["key_refreshes"] == 0  # each signature verified at once

    with sqlite3.connect(db) as conn:
        check_against_truth(lambda q: conn.execute(q).fetchall(), truth)
        saved = conn.execute("SELECT labeler, cursor FROM labeler_cursor").fetchall()
        before = conn.execute("SELECT * FROM labels ORDER BY seq").fetchall()
    assert saved == [(ozone.ready["labeler"], head)]

    stream_id = "labels-" + ozone.ready["labeler"].split("://")[1].replace(":", "-")
    shown = run_cli("status", stream_id, "--workdir", str(work), "--json")
    assert shown.returncode == 0, shown.stderr
    status = json.loads(shown.stdout)
    assert status["labelers"] == [
        {"labeler": ozone.ready["labeler"], "did": truth["did"], "cursor": head}
    ]

    again = run_cli(*labels_args(ozone, work, f"sqlite:///{db}"))
    assert again.returncode == 0, again.stderr
    assert done_facts(again.stderr)["labels_received"] == 0  # resumed at the head
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT * FROM labels ORDER BY seq").fetchall() == before


def test_until_live_into_postgres_equals_the_truth(
    ozone: Server, pg_url: str, tmp_path: Path
) -> None:
    done = run_cli(*labels_args(ozone, tmp_path / "work", pg_url))
    assert done.returncode == 0, done.stderr
    with psycopg.connect(pg_url) as conn:
        check_against_truth(lambda q: conn.execute(q).fetchall(), ozone.ready["truth_data"])


def test_parquet_log_compacted_equals_the_truth(ozone: Server, tmp_path: Path) -> None:
    truth = ozone.ready["truth_data"]
    log, out = tmp_path / "log", tmp_path / "out"
    done = run_cli(*labels_args(ozone, tmp_path / "work", str(log), "--batch-size", "5"))
    assert done.returncode == 0, done.stderr
    folded = run_cli("labels", "compact", str(log), str(out))
    assert folded.returncode == 0, folded.stderr
    current = pq.read_table(out / "labels_current.parquet").to_pylist()
    assert truth_rows(current) == truth_rows(truth["current"])
    every = pq.read_table(out / "labels.parquet").to_pylist()
    assert truth_rows([r for r in every if r["neg"]]) == truth_rows(truth["negated"])
    assert len(every) == len(truth["stream"])


@pytest.mark.parametrize("kind", ["sqlite", "parquet"])
def test_killed_mid_run_and_started_again_ends_exact(
    ozone: Server, tmp_path: Path, kind: str
) -> None:
    truth = ozone.ready["truth_data"]
    target = tmp_path / "log" if kind == "parquet" else tmp_path / "labels.db"
    sink = str(target) if kind == "parquet" else f"sqlite:///{target}"
    args = labels_args(ozone, tmp_path / "work", sink, "--batch-size", "4")
    # SIGKILL while the third batch is written (SQLite: inside its transaction; the log:
    # its part written, its cursor not)
    killed = run_cli(*args, env={"SKYFILL_FAILPOINT": "labels_applied:3"})
    assert killed.returncode == -9, killed.stderr
    again = run_cli(*args, "--batch-size", "5")  # other batches: the log's parts overlap
    assert again.returncode == 0, again.stderr
    assert 0 < done_facts(again.stderr)["labels_received"] < len(truth["stream"])
    if kind == "sqlite":
        with sqlite3.connect(target) as conn:
            check_against_truth(lambda q: conn.execute(q).fetchall(), truth)
        return
    folded = run_cli("labels", "compact", str(target), str(tmp_path / "out"))
    assert folded.returncode == 0, folded.stderr
    current = pq.read_table(tmp_path / "out" / "labels_current.parquet").to_pylist()
    assert truth_rows(current) == truth_rows(truth["current"])
    assert "rows 28, replayed 4," in folded.stdout  # the third batch's rows, written twice

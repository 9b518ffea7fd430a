"""Fetch processes forked before the job's event loop (`fetch_pool.start_early`, called by
`session.start_processes`): the job's pool takes them, another count does not, they end if
no pool takes them, and nothing is forked while another thread runs. That the job's output
is the same with them is `tests/cli/test_run_simnet.py`'s (its `skyfill run
--fetch-processes 2` forks them)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from skyfill.backfill import fetch_pool
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.fetch_pool import FetchPool
from skyfill.backfill.handler import BackfillHandler
from skyfill.cli.session import start_processes


@pytest.fixture(autouse=True)
def no_early_processes() -> Iterator[None]:
    fetch_pool.stop_early()
    yield
    fetch_pool.stop_early()


def _config(tmp_path: Path, processes: int) -> BackfillConfig:
    dids = tmp_path / "dids.txt"
    dids.write_text("did:plc:aaaaaaaaaaaaaaaaaaaaaaaa\n")
    return BackfillConfig(dids_file=str(dids), job_id="early", fetch_processes=processes)


def _children() -> set[int]:
    return {child.pid for child in psutil.Process(os.getpid()).children()}


def test_the_pool_of_as_many_processes_takes_those_forked_early(tmp_path: Path) -> None:
    before = _children()
    fetch_pool.start_early(2)
    forked = _children() - before
    assert len(forked) == 2  # started at once, before any chunk
    assert fetch_pool._early is not None
    early = fetch_pool._early[1]
    assert FetchPool(_config(tmp_path, 3), 3, Counter())._new_pool() is not early
    assert FetchPool(_config(tmp_path, 2), 2, Counter())._new_pool() is early
    assert fetch_pool._early is None  # taken once
    early.shutdown(wait=True)
    assert not (_children() & forked)


def test_processes_no_pool_took_end(tmp_path: Path) -> None:
    before = _children()
    fetch_pool.start_early(1)
    forked = _children() - before
    assert len(forked) == 1
    fetch_pool.stop_early()
    assert not (_children() & forked)


def test_nothing_is_forked_while_another_thread_runs(tmp_path: Path) -> None:
    handler = BackfillHandler(_config(tmp_path, 2))
    release = threading.Event()
    other = threading.Thread(target=release.wait)
    other.start()
    try:
        start_processes(handler)
        assert fetch_pool._early is None
    finally:
        release.set()
        other.join()
    start_processes(handler)  # alone again: forked
    assert fetch_pool._early is not None and fetch_pool._early[0] == 2


def test_a_job_that_wants_no_pool_forks_none(tmp_path: Path) -> None:
    start_processes(BackfillHandler(_config(tmp_path, 0)))
    # under a memory limit the job fetches in its own process
    start_processes(BackfillHandler(replace(_config(tmp_path, 2), max_memory=1 << 30)))
    assert fetch_pool._early is None

"""Fetch processes split the hosts' limits: N children together keep what one process
would (`BackfillConfig.limit_settings(share=N)`), unless a budget shared through Redis
splits the rates; and how many there are when `--fetch-processes` is unset."""

from __future__ import annotations

import os
import pickle

import pytest

from skyfill.atproto import fastrepo
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.fetch_pool import auto_processes, chunk_size
from skyfill.ratelimit.redis_budget import RedisBudget


@pytest.mark.parametrize("share", [1, 2, 3, 8])
def test_children_together_keep_the_limits_of_one_process(share: int) -> None:
    config = BackfillConfig(
        job_id="j",
        dids_file="dids.txt",
        rate_limit="3000/5m",
        hosts={"pds.example.com": "100/1m"},
        concurrency=32,
        host_concurrency=8,
    )
    whole, part = config.limit_settings(), config.limit_settings(share=share)
    assert part.default_rate.per_second * share == pytest.approx(whole.default_rate.per_second)
    assert part.default_rate.requests == whole.default_rate.requests  # the same burst
    host = "pds.example.com"
    assert part.host_rates[host].per_second * share == pytest.approx(
        whole.host_rates[host].per_second
    )
    assert part.global_concurrency * share <= whole.global_concurrency
    assert part.host_concurrency >= 1 and part.host_concurrency * share <= max(
        whole.host_concurrency, share
    )
    assert part.adaptive == whole.adaptive


def test_a_child_with_a_shared_budget_keeps_the_whole_rates_and_a_share_of_concurrency() -> None:
    """The budget shared through Redis splits the rates among every process that leases
    from it; a child's own bucket must not split them a second time."""
    config = BackfillConfig(job_id="j", dids_file="d", concurrency=32, host_concurrency=8)
    opener = RedisBudget.from_url("redis://127.0.0.1:1/0").opener()  # connects lazily
    shared = config.limit_settings(share=4, split_rates=False)  # a child with the budget
    own = config.limit_settings(share=4)
    whole = config.limit_settings()
    assert shared.default_rate == whole.default_rate
    assert own.default_rate.per_second * 4 == pytest.approx(whole.default_rate.per_second)
    assert shared.global_concurrency == own.global_concurrency == 8
    # a child is handed the opener pickled; it opens a budget of its own on the same Redis
    assert opener is not None and isinstance(pickle.loads(pickle.dumps(opener))(), RedisBudget)


@pytest.mark.parametrize(
    ("dids", "distributed", "cores", "c_decoder", "expected"),
    [
        (3000, False, 2, True, 2),  # one per core
        (None, False, 4, True, 4),  # a host listing: big
        (999, False, 4, True, 0),  # too small to pay for the children's start
        (3000, True, 4, True, 1),  # a distributed worker (run one per core): one
        (3000, False, 1, True, 0),  # one core: nothing to gain
        (3000, False, 4, False, 0),  # the pure-Python decoder
    ],
)
def test_fetch_processes_unset_go_by_the_job(
    monkeypatch: pytest.MonkeyPatch,
    dids: int | None,
    distributed: bool,
    cores: int,
    c_decoder: bool,
    expected: int,
) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setattr(fastrepo, "ENABLED", c_decoder)
    assert auto_processes(dids, distributed) == expected


@pytest.mark.parametrize(
    ("dids", "processes", "size"),
    [
        (100, 2, 100),  # 4 open tasks, a chunk each: both processes busy
        (100, 4, 100),
        (100, 8, 50),  # 8 chunks for 8 processes
        (100, 16, 25),  # 16 cores: 4 chunks of 25 per task, none idle
        (30, 16, 8),
        (1, 16, 1),
        (250, 2, 100),  # never above CHUNK_DIDS
    ],
)
def test_a_task_is_split_only_to_keep_every_process_busy(
    dids: int, processes: int, size: int
) -> None:
    assert chunk_size(dids, processes, open_tasks=4) == size
    chunks = -(-dids // size)
    assert chunks * 4 >= min(processes, 4 * dids)  # every process can hold a chunk

"""Discovery with worker nodes (on Redis, and in memory in one process): one node lists
(under a lease), all of them work."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from skyfill.engine.distributed.node import NodeSettings, WorkerNode
from skyfill.engine.distributed.redis_lease import RedisLeases
from skyfill.engine.distributed.redis_queue import RedisTaskQueue
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import JobStatus
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.engine.state.redis import RedisStateStore
from tests.engine.discovering import DiscoveringSquares
from tests.engine.nodes import memory_nodes

SETTINGS = EngineSettings(batch_size=4, parallel_tasks=2, flush_items=2, retries=0)


def _redis_nodes(redis_url: str, layout: JobLayout, handlers: list) -> tuple[Any, list]:
    planner = RedisStateStore.from_url(redis_url, layout.job_id)
    stores = [RedisStateStore.from_url(redis_url, layout.job_id) for _ in handlers]
    nodes = [
        WorkerNode(
            JobRunner(h, layout, s, SETTINGS),
            s,
            NodeSettings(worker_id=f"n{i}", visibility_timeout=5.0, poll_seconds=0.1),
            queue=RedisTaskQueue(s.client, s.keys),
            leases=RedisLeases(s.client, s.keys),
        )
        for i, (h, s) in enumerate(zip(handlers, stores, strict=True))
    ]
    return planner, list(zip(nodes, stores, strict=True))


@pytest.mark.parametrize("backend", ["redis", "memory"])
def test_two_nodes_share_a_discovering_job(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    layout = JobLayout(tmp_path, f"disc-{uuid.uuid4().hex[:6]}")
    handlers = [DiscoveringSquares(2, 40) for _ in range(2)]
    if backend == "redis":
        planner, pairs = _redis_nodes(request.getfixturevalue("redis_url"), layout, handlers)
    else:
        planner, pairs = memory_nodes(layout, handlers, SETTINGS)
    first = DiscoveringSquares(2, 40)
    JobRunner(first, layout, planner, SETTINGS).submit(first.plan())
    nodes = [node for node, _ in pairs]
    stores = [s for _, s in pairs]

    async def serve_all() -> list:
        return await asyncio.gather(*(node.serve() for node in nodes))

    ended = asyncio.run(serve_all())
    assert all(job.status is JobStatus.COMPLETED for job in ended)
    job = planner.job()
    assert job is not None and job.item_count == 42
    listed = sorted(p for h in handlers for p in h.pages_listed)
    assert listed == list(range(3, 43, 4)), "every page listed once, by one node"
    processed = sorted(int(p) for h in handlers for p in h.processed)
    assert processed == [n for n in range(1, 43) if n % 11], "each item once; `gone` never"
    table = pq.read_table(layout.output / "all.parquet")
    assert table.num_rows == sum(n for n in range(1, 43) if n % 7 and n % 11)
    for store in [planner, *stores]:
        store.close()

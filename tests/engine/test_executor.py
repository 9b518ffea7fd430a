"""The process executor survives a dead child: the work fails retryably, the pool recovers."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from skyfill.engine.executor import make_executor
from skyfill.errors import WorkerCrashed


def _square(n: int) -> int:
    return n * n


def _die(_: int) -> int:
    os.kill(os.getpid(), signal.SIGKILL)
    return 0


def test_process_pool_recovers_after_a_child_dies() -> None:
    executor = make_executor(2)

    async def scenario() -> list[int]:
        assert await executor.run(_square, 7) == 49
        with pytest.raises(WorkerCrashed):
            await executor.run(_die, 0)
        return list(await asyncio.gather(*(executor.run(_square, n) for n in range(5))))

    try:
        assert asyncio.run(scenario()) == [0, 1, 4, 9, 16]
    finally:
        executor.shutdown()


def test_inline_executor_runs_in_process() -> None:
    executor = make_executor(0)
    assert asyncio.run(executor.run(_square, 3)) == 9

"""Executors: the process pool survives a dead child (the work fails retryably, the pool
recovers); the thread pool runs work off the event loop."""

from __future__ import annotations

import asyncio
import os
import signal
import threading

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


def test_thread_executor_runs_off_the_event_loop_and_passes_errors_on() -> None:
    executor = make_executor(0, threads=2)

    def fail() -> None:
        raise ValueError("bad input")

    async def scenario() -> tuple[set[int], int]:
        idents = set(await asyncio.gather(*(executor.run(threading.get_ident) for _ in range(8))))
        with pytest.raises(ValueError, match="bad input"):
            await executor.run(fail)
        return idents, await executor.run(_square, 6)

    try:
        idents, square = asyncio.run(scenario())
    finally:
        executor.shutdown()
    assert threading.get_ident() not in idents and 1 <= len(idents) <= 2
    assert square == 36


def test_children_die_with_their_parent(tmp_path) -> None:
    """kill -9 of the parent leaves no orphaned pool process behind."""
    import subprocess
    import sys
    import time

    script = tmp_path / "parent.py"
    script.write_text(
        "import asyncio, os, time\n"
        "from skyfill.engine.executor import make_executor\n"
        "def pid(_):\n    return os.getpid()\n"
        "ex = make_executor(2)\n"
        "async def main():\n"
        "    pids = {await ex.run(pid, 0) for _ in range(8)}\n"
        "    print(' '.join(map(str, pids)), flush=True)\n"
        "    await asyncio.sleep(60)\n"
        'if __name__ == "__main__":\n    asyncio.run(main())\n'
    )
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    children = [int(p) for p in parent.stdout.readline().split()]
    assert children
    parent.kill()
    parent.wait(10)
    deadline = time.monotonic() + 10
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [p for p in children if _alive(p)]
        time.sleep(0.1)
    assert alive == []


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except FileNotFoundError:
        return False

"""Runs the work in a pool of processes: decoding is CPU-bound and the GIL serialises threads."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")


class ProcessExecutor:
    def __init__(self, processes: int) -> None:
        # forkserver: children do not inherit the parent's event loop, sockets or threads.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["skyfill.atproto.repo", "pyarrow"])
        self._pool = ProcessPoolExecutor(max_workers=processes, mp_context=context)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

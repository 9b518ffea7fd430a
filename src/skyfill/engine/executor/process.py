"""Runs the work in a pool of processes: decoding is CPU-bound and the GIL serialises threads.

Children ignore SIGINT (Ctrl-C is the parent's to handle: it stops the job cleanly). A
child that dies (killed, out of memory) breaks the pool; the pool is then replaced and
the work that was in flight fails with the retryable `WorkerCrashed`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from skyfill.errors import WorkerCrashed

T = TypeVar("T")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessExecutor:
    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._pool = self._new_pool()

    def _new_pool(self) -> ProcessPoolExecutor:
        # forkserver: children do not inherit the parent's event loop, sockets or threads.
        context = multiprocessing.get_context("forkserver")
        context.set_forkserver_preload(["skyfill.atproto.repo", "pyarrow"])
        return ProcessPoolExecutor(
            max_workers=self._processes, mp_context=context, initializer=_ignore_sigint
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            if self._pool is pool:  # the first to notice replaces it
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise WorkerCrashed("a decoding process died (killed or out of memory)") from None

    def shutdown(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)

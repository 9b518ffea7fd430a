"""Runs the work in a pool of processes: decoding is CPU-bound and the GIL serialises threads.

The pool starts on first use, so a job that never needs it pays nothing. Children are
spawned (no inherited event loop, sockets or threads), ignore SIGINT (Ctrl-C is the
parent's to handle) and, on Linux, die with their parent: a `kill -9` of skyfill leaves
no orphaned decoders. A child that dies breaks the pool; the pool is then replaced and
the work that was in flight fails with the retryable `WorkerCrashed`.
"""

from __future__ import annotations

import asyncio
import ctypes
import multiprocessing
import os
import signal
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from skyfill.errors import WorkerCrashed

T = TypeVar("T")
_PR_SET_PDEATHSIG = 1


def init_child(parent_pid: int) -> None:
    """A pool child: ignores SIGINT (the parent handles Ctrl-C) and dies with its parent."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class ProcessExecutor:
    def __init__(self, processes: int) -> None:
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=init_child,
            initargs=(os.getpid(),),
        )

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._pool is None:
            self._pool = self._new_pool()
        pool = self._pool
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            if self._pool is pool:  # the first to notice replaces it
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            raise WorkerCrashed("a decoding process died (killed or out of memory)") from None

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

"""Executors: where CPU-heavy work (decoding) runs, off the event loop."""

from skyfill.engine.executor.base import Executor
from skyfill.engine.executor.inline import InlineExecutor
from skyfill.engine.executor.process import ProcessExecutor
from skyfill.engine.executor.thread import ThreadExecutor

__all__ = ["Executor", "InlineExecutor", "ProcessExecutor", "ThreadExecutor", "make_executor"]


def make_executor(processes: int, threads: int = 0) -> Executor:
    """A process pool of `processes` workers; else, when 0, a pool of `threads` threads
    (for work that releases the GIL); else inline execution."""
    if processes > 0:
        return ProcessExecutor(processes)
    return ThreadExecutor(threads) if threads > 0 else InlineExecutor()

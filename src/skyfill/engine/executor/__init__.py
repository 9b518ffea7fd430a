"""Executors: where CPU-heavy work (decoding) runs, off the event loop."""

from skyfill.engine.executor.base import Executor
from skyfill.engine.executor.inline import InlineExecutor
from skyfill.engine.executor.process import ProcessExecutor

__all__ = ["Executor", "InlineExecutor", "ProcessExecutor", "make_executor"]


def make_executor(processes: int) -> Executor:
    """A process pool of `processes` workers, or inline execution when 0."""
    return ProcessExecutor(processes) if processes > 0 else InlineExecutor()

"""Run one skyfill command with its phases timed: where a run's wall time and CPU go.

    PYTHONPATH=src .venv/bin/python benchmarks/trace_phases.py run --dids FILE ... \\
        [skyfill's flags]
    PYTHONPATH=src .venv/bin/python benchmarks/trace_phases.py worker --state REDIS --job ID

prints to stderr, as they happen, `TRACE <seconds> <what>` for the handler's open and close,
the end of the fetch phase (the next phase planned) and the aggregation, and one `CHUNK`
line per chunk a fetch process handled (its pid, start and end, DIDs); and at exit the CPU
seconds of this process and of the children it waited for (the fetch processes). Times
count from `TRACE_T0` (epoch seconds, e.g. `$(date +%s.%N)`, so that several processes
share one clock), else from this process's start. Used for docs/BENCHMARKS.md §28.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import inspect
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

T0 = float(os.environ.get("TRACE_T0") or time.time())


def say(message: str) -> None:
    print(f"TRACE {time.time() - T0:7.3f} {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def said(label: str) -> Iterator[None]:
    """Say when `label` starts and how long it took."""
    started = time.time()
    say(f"> {label}")
    try:
        yield
    finally:
        say(f"< {label} {time.time() - started:.3f}")


def timed(owner: Any, name: str) -> None:
    """Replace `owner.name` by a version that says when it starts and how long it took."""
    fn = getattr(owner, name)
    label = f"{owner.__name__}.{name}"

    @functools.wraps(fn)
    async def run_async(*args: Any, **kwargs: Any) -> Any:
        with said(label):
            return await fn(*args, **kwargs)

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with said(label):
            return fn(*args, **kwargs)

    setattr(owner, name, run_async if inspect.iscoroutinefunction(fn) else run)


def _trace_chunks() -> None:
    """Each chunk a fetch process handles: a line from that process. Installed at import,
    so that the spawned children (which import this file as `__mp_main__`) do it too; the
    pool pickles `fetch_chunk` by name, so the children run this version."""
    from skyfill.backfill import fetch_pool

    original: Callable[..., Any] = fetch_pool.fetch_chunk

    def fetch_chunk(dids: list[str], scratch: str, *opening: Any) -> Any:
        started = time.time()
        result = original(dids, scratch, *opening)
        ended = time.time()
        print(
            f"CHUNK {os.getpid()} {started - T0:.3f} {ended - T0:.3f} {len(dids)}",
            file=sys.stderr,
            flush=True,
        )
        return result

    fetch_chunk.__module__ = fetch_pool.__name__
    fetch_chunk.__qualname__ = "fetch_chunk"
    fetch_pool.fetch_chunk = fetch_chunk


_trace_chunks()


def main() -> None:
    os.environ["TRACE_T0"] = repr(T0)  # the fetch processes count from here too
    from skyfill.backfill.handler import BackfillHandler
    from skyfill.cli.main import main as skyfill_main
    from skyfill.engine.distributed.node import WorkerNode
    from skyfill.engine.runner import JobRunner

    timed(BackfillHandler, "open")
    timed(BackfillHandler, "close")
    timed(JobRunner, "plan_next_phase")
    timed(JobRunner, "aggregate_job")
    timed(WorkerNode, "_aggregate")

    def cpu() -> None:
        t = os.times()
        children = t.children_user + t.children_system
        say(f"cpu self {t.user + t.system:.2f} s, children {children:.2f} s")

    atexit.register(cpu)
    sys.argv = [str(Path(sys.argv[0]).with_name("skyfill")), *sys.argv[1:]]
    say("start")
    skyfill_main()


if __name__ == "__main__":
    main()

"""Named fault points for tests: `SKYFILL_FAILPOINT=name[:n|:every][:raise|:sleep=S]`.

The n-th time (default: the first; `every`: each time) execution passes `failpoint(name)`,
the process is killed with SIGKILL; or, with `:raise`, a `FailpointError` is raised (a
failure of the machinery, such as a full disk); or, with `:sleep=S`, the calling thread
waits S seconds (a slow disk, a state store on the far side of a slow network). This is
how the tests prove that a crash at every phase boundary and inside the aggregation leaves
a job that `resume` finishes correctly, and that a slow store does not stall the fetches.
"""

from __future__ import annotations

import os
import signal
import threading
import time

_hits: dict[str, int] = {}
_lock = threading.Lock()


class FailpointError(RuntimeError):
    """Raised by a failpoint in `raise` mode."""


def failpoint(name: str) -> None:
    spec = os.environ.get("SKYFILL_FAILPOINT")
    if not spec:
        return
    target, *options = spec.split(":")
    if target != name or not _due(name, options):
        return
    sleep = next((o.removeprefix("sleep=") for o in options if o.startswith("sleep=")), None)
    if sleep is not None:
        time.sleep(float(sleep))
    elif "raise" in options:
        raise FailpointError(f"failpoint {name} reached")
    else:
        os.kill(os.getpid(), signal.SIGKILL)


def _due(name: str, options: list[str]) -> bool:
    if "every" in options:
        return True
    count = next((int(o) for o in options if o.isdigit()), 1)
    with _lock:  # failpoints are passed from worker threads too
        _hits[name] = _hits.get(name, 0) + 1
        return _hits[name] == count

"""Named fault points for tests: `SKYFILL_FAILPOINT=name[:n][:raise]`.

The n-th time (default: the first) execution passes `failpoint(name)`, the process is
killed with SIGKILL, or, with `:raise`, a `FailpointError` is raised (a failure of the
machinery, such as a full disk). This is how the tests prove that a crash at every phase
boundary and inside the aggregation leaves a job that `resume` finishes correctly.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


class FailpointError(RuntimeError):
    """Raised by a failpoint in `raise` mode."""


def failpoint(name: str) -> None:
    spec = os.environ.get("SKYFILL_FAILPOINT")
    if not spec:
        return
    target, *options = spec.split(":")
    if target != name:
        return
    count = next((int(o) for o in options if o.isdigit()), 1)
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != count:
        return
    if "raise" in options:
        raise FailpointError(f"failpoint {name} reached")
    os.kill(os.getpid(), signal.SIGKILL)

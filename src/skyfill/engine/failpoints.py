"""Named crash points for tests: `SKYFILL_FAILPOINT=name[:n]` kills the process (SIGKILL)
the n-th time (default: first) execution passes `failpoint(name)`.

This is how the tests prove that a crash at every phase boundary and inside the
aggregation leaves a job that `resume` finishes with the same result.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    spec = os.environ.get("SKYFILL_FAILPOINT")
    if not spec:
        return
    target, _, count = spec.partition(":")
    if target != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] >= int(count or 1):
        os.kill(os.getpid(), signal.SIGKILL)

"""The reference PDS network in live mode (`net.mjs --live-writes R`): it keeps writing
after its ready line, and on SIGUSR2 stops writing, writes its truth file and prints
`{"truth": true, "out": PATH, "writes": N}` (see ../shared/refpds/README.md "Live mode")."""

from __future__ import annotations

import json
import queue
import signal
import threading
from pathlib import Path
from typing import Any

from tests.helpers import Server

TRUTH_TIMEOUT = 60
LIVE_OPTIONS = [
    "--accounts", "6", "--records", "10", "--pds", "1",
    "--live-writes", "20", "--live-seconds", "120",
]  # fmt: skip
"""One PDS (one stream), a few accounts; writing stops by itself after 2 minutes."""


class LiveTruthTimeout(AssertionError):
    """The network did not print its truth line in time after SIGUSR2."""


def _stdout_lines(server: Server) -> queue.Queue[str | None]:
    """The server's further stdout lines, read by a daemon thread (None at EOF); one
    reader per server, kept in `ready` so a second call reuses it."""
    existing = server.ready.get("_lines")
    if isinstance(existing, queue.Queue):
        return existing
    lines: queue.Queue[str | None] = queue.Queue()
    stdout = server.process.stdout
    assert stdout is not None

    def pump() -> None:
        for line in stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    server.ready["_lines"] = lines
    return lines


def stop_writes_and_get_truth(server: Server, timeout: float = TRUTH_TIMEOUT) -> dict[str, Any]:
    """SIGUSR2, then the truth file it names once its `{"truth": true}` line comes; the
    line's `writes` (acknowledged live writes) is added as `_writes`."""
    lines = _stdout_lines(server)
    server.process.send_signal(signal.SIGUSR2)
    try:
        while (line := lines.get(timeout=timeout)) is not None:
            try:
                said = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(said, dict) and said.get("truth"):
                truth = json.loads(Path(said["out"]).read_text())
                return {**truth, "_writes": said.get("writes")}
    except queue.Empty:
        raise LiveTruthTimeout(f"no truth line {timeout} s after SIGUSR2") from None
    raise LiveTruthTimeout(f"the network exited ({server.process.poll()}) before its truth line")

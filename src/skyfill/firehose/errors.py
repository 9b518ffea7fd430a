"""Why a stream stops for good, said in one line by the CLI."""

from __future__ import annotations

from skyfill.errors import SkyfillError


class StreamStopped(SkyfillError):
    """The stream cannot go on (the host refused it, e.g. FutureCursor; a decode worker
    died): said in one line; what was applied before is saved with its cursor."""

    error_class = "stream_refused"


class DecodeWorkerDied(StreamStopped):
    """A decode worker process ended while the stream was running."""

    error_class = "decode_worker_died"

"""Why a stream stops for good, said in one line by the CLI, and the one-line reports of a
stream the host refused or whose cursor it no longer keeps."""

from __future__ import annotations

from typing import TYPE_CHECKING

from skyfill.errors import SkyfillError

if TYPE_CHECKING:  # not at run time: every command loads this module (cli/main.py)
    from skyfill.atproto.stream.frames import ErrorFrame


class StreamStopped(SkyfillError):
    """The stream cannot go on (the host refused it, e.g. FutureCursor; a decode worker
    died): said in one line; what was applied before is saved with its cursor."""

    error_class = "stream_refused"


class DecodeWorkerDied(StreamStopped):
    """A decode worker process ended while the stream was running."""

    error_class = "decode_worker_died"


def refusal_line(frame: ErrorFrame, url: str, cursor: int | None) -> str:
    if frame.error == "FutureCursor":
        return (
            f"{url} says cursor {cursor} is in its future ({frame.message or 'FutureCursor'}): "
            "the host's sequence was reset or this is another host; start again with "
            "--reset-cursor and --since or --cursor"
        )
    return f"{url} refused the stream: {frame.error}: {frame.message or ''}".rstrip(": ")


def gap_line(url: str, cursor: int | None, first: int, when: str) -> str:
    return (
        f"{url} no longer keeps the events after seq {cursor or 0}: it starts at seq {first} "
        f"({when}); events from seq {(cursor or 0) + 1} to {first - 1} are missing. Close the gap "
        f"with a snapshot of the repos (skyfill run --from-host {url} --sink <the same sink>) "
        "while this stream goes on"
    )

"""Why a label stream stops for good, said in one line by the CLI."""

from __future__ import annotations

from skyfill.atproto.stream.frames import ErrorFrame
from skyfill.errors import SkyfillError


class LabelsStopped(SkyfillError):
    """A labeler refused its stream (e.g. FutureCursor): said in one line; what was
    applied before is saved with its cursor."""

    error_class = "stream_refused"


def refusal_line(frame: ErrorFrame, url: str, cursor: int | None) -> str:
    if frame.error == "FutureCursor":
        return (
            f"labeler {url} says cursor {cursor} is in its future "
            f"({frame.message or 'FutureCursor'}): its sequence was reset, or the URL serves "
            "another labeler now; follow it into a new sink (the cursor is the sink's, "
            "in labeler_cursor or labels_cursor.json)"
        )
    return f"labeler {url} refused the stream: {frame.error}: {frame.message or ''}".rstrip(": ")

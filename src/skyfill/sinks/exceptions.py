"""Errors of the sinks, each a single line that never holds a password:

SinkError              the final dataset could not be written where the user asked
├── SinkUrlError       the --sink URL is malformed or names an unknown kind of sink
│                      (also a UsageError: a bad invocation, exit code 2)
├── SinkUnavailable    the database cannot be reached or opened (refused, unknown host,
│                      authentication failed, missing directory)
└── SinkWriteError     the load failed half-way; its transaction was rolled back, so the
                       tables are as they were (resume loads again)
"""

from __future__ import annotations

from skyfill.errors import UsageError


class SinkError(Exception):
    """The final dataset could not be written to the sink."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


class SinkUrlError(SinkError, UsageError):
    """The --sink URL is malformed or of an unknown kind."""


class SinkUnavailable(SinkError):
    """The sink's database cannot be reached, opened or authenticated against."""


class SinkWriteError(SinkError):
    """Writing to the sink failed; the load's transaction was rolled back."""


def one_line(text: str, secret: str | None = None) -> str:
    """`text` on one line (database messages carry DETAIL/HINT lines), `secret` masked."""
    if secret:
        text = text.replace(secret, "***")
    return "; ".join(line.strip() for line in text.splitlines() if line.strip())

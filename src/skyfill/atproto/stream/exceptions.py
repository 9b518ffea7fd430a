"""Errors of one connection to an event stream (all transient: the consumer reconnects).

    TransientError
    ├── StreamUnavailable  no stream: refused, unreachable, DNS, TLS, or the handshake was
    │                      answered with an HTTP status instead of 101 (`status`)
    └── StreamClosed       the stream ended: the host closed it (`code`, `reason`, after
                           an error frame such as FutureCursor: 1008), or the connection
                           dropped without a close frame (`clean` False, code 1006)
An endpoint on a private address raises `skyfill.net.exceptions.PrivateNetworkRefused`
(terminal), as the HTTP client does.
"""

from __future__ import annotations

from skyfill.errors import TransientError

ABNORMAL_CLOSURE = 1006
"""RFC 6455's code for a connection that ended without a close frame."""


class StreamUnavailable(TransientError):
    """The websocket could not be opened; `status` is the HTTP answer when there was one."""

    error_class = "stream_unavailable"

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class StreamClosed(TransientError):
    """The websocket ended; `code` and `reason` as the host sent them (1006 and "" when
    it sent none: `clean` is then False)."""

    error_class = "stream_closed"

    def __init__(self, message: str, code: int, reason: str = "", clean: bool = True) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.clean = clean

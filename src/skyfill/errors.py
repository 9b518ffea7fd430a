"""The failure classes of skyfill and the one place that decides what is retried.

Every error a unit of work can end with derives from `SkyfillError` and carries an
`error_class` (a short, stable name recorded in the state store and the manifests) and
an `outcome` (the status it gives the item, e.g. a repo's `repos.status`).  Whether an
error is retried is decided by its class alone, by `retryable`:

    SkyfillError
    ├── TransientError          retryable: rate_limited, timeout, server_error, network,
    │                           worker_crashed
    └── TerminalError           recorded once, never retried
        └── (domain errors: RepoNotFound, InvalidRepo, ... in skyfill.atproto.exceptions)

`UsageError` is different: it is a mistake in the invocation or config and ends the
command with a one-line message and a non-zero exit code.
"""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """How a unit of work ends; for a backfill, a repo's `repos.status`. `failed` is the
    only outcome that is ever retried (and only when its error is retryable)."""

    OK = "ok"
    FAILED = "failed"
    NOT_FOUND = "not_found"
    DELETED = "deleted"
    DEACTIVATED = "deactivated"
    TAKENDOWN = "takendown"
    SUSPENDED = "suspended"
    INVALID_REPO = "invalid_repo"


class SkyfillError(Exception):
    """Base of every error that ends one unit of work (one DID, one item)."""

    error_class: str = "failed"
    outcome: Outcome = Outcome.FAILED
    retryable: bool = False

    def __init__(self, message: str = "") -> None:
        super().__init__(message or self.__class__.__name__)

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.__class__.__name__


class TransientError(SkyfillError):
    """A failure that may go away if the same work is tried again later."""

    retryable = True
    retry_after: float | None = None


class TerminalError(SkyfillError):
    """A failure that will not change on retry: recorded once, never retried."""

    retryable = False


class RateLimited(TransientError):
    """The server refused the request because a rate limit was exceeded (HTTP 429)."""

    error_class = "rate_limited"

    def __init__(self, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(message or "rate limited")
        self.retry_after = retry_after


class RequestTimeout(TransientError):
    """The server did not answer (or finish answering) within the timeout."""

    error_class = "timeout"


class ServerError(TransientError):
    """The server answered with a 5xx status."""

    error_class = "server_error"


class NetworkError(TransientError):
    """The connection could not be made or broke (DNS, refused, reset)."""

    error_class = "network"


class WorkerCrashed(TransientError):
    """The process doing the work died (killed, out of memory) before it finished."""

    error_class = "worker_crashed"


class UsageError(Exception):
    """Bad invocation or configuration: reported as one line, exit code 2."""


def classify(exc: BaseException) -> SkyfillError:
    """Return `exc` as a SkyfillError, wrapping anything unexpected as a terminal failure."""
    if isinstance(exc, SkyfillError):
        return exc
    return TerminalError(f"unexpected {type(exc).__name__}: {exc}")

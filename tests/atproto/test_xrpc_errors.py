"""XRPC answers -> typed errors -> repo statuses, as the reference PDS and production send them."""

from __future__ import annotations

import time

import pytest
from multidict import CIMultiDict

from skyfill.atproto.xrpc import error_for_response, retry_after_seconds


@pytest.mark.parametrize(
    ("status", "body", "error_class", "outcome", "retryable"),
    [
        (
            400,
            b'{"error":"RepoNotFound","message":"Could not find repo"}',
            "not_found",
            "not_found",
            False,
        ),
        (404, b'{"error":"NotFound","message":"Repo not found"}', "not_found", "not_found", False),
        (400, b'{"error":"RepoDeactivated","message":"x"}', "deactivated", "deactivated", False),
        (400, b'{"error":"RepoTakendown","message":"x"}', "takendown", "takendown", False),
        (400, b'{"error":"RepoSuspended","message":"x"}', "suspended", "suspended", False),
        (429, b"<html>Too Many Requests</html>", "rate_limited", "failed", True),
        (503, b"<html>Service Unavailable</html>", "server_error", "failed", True),
        (500, b'{"error":"InternalServerError"}', "server_error", "failed", True),
        (401, b'{"error":"AuthRequired"}', "request_error", "failed", False),
    ],
)
def test_error_mapping(
    status: int, body: bytes, error_class: str, outcome: str, retryable: bool
) -> None:
    error = error_for_response(status, CIMultiDict(), body, "getRepo did:plc:x")
    assert (error.error_class, error.outcome, error.retryable) == (error_class, outcome, retryable)


def test_retry_after_in_seconds_and_reset_as_epoch() -> None:
    assert retry_after_seconds(CIMultiDict({"Retry-After": "7"})) == 7
    reset = str(int(time.time()) + 30)
    assert 28 <= retry_after_seconds(CIMultiDict({"RateLimit-Reset": reset})) <= 30
    assert retry_after_seconds(CIMultiDict()) is None

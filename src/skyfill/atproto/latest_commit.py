"""A repo's current commit CID and rev from its PDS: `com.atproto.sync.getLatestCommit`.

A cheap way to learn whether a repo changed since it was fetched (compare the rev) before
downloading it again. It fails like getRepo: RepoNotFound, RepoDeactivated, RepoTakendown
and RepoSuspended (400 on the reference PDS) raise the same exceptions, so a refresh
records the same statuses as a backfill.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from skyfill.atproto.cid import is_cid_str
from skyfill.atproto.did import validate_supported_did
from skyfill.atproto.exceptions import InvalidResponse, NotSupported
from skyfill.atproto.retry import DEFAULT_RETRY, RetryPolicy, with_retries
from skyfill.atproto.syntax import is_valid_tid
from skyfill.atproto.xrpc import UNSUPPORTED_ERRORS, XrpcClient, error_fields, error_for_response
from skyfill.errors import SkyfillError

GET_LATEST_COMMIT = "com.atproto.sync.getLatestCommit"


class LatestCommit(NamedTuple):
    cid: str
    """CID of the repo's current commit (`bafyrei…`)."""
    rev: str
    """The repo's current revision (a TID)."""


def latest_commit_error(
    status: int, headers: Mapping[str, str], body: bytes, what: str
) -> SkyfillError:
    """getRepo's mapping (see xrpc.error_for_response), except that 501 and the errors
    MethodNotImplemented / XRPCNotSupported raise NotSupported."""
    name, message = error_fields(body)
    if status == 501 or name in UNSUPPORTED_ERRORS:
        detail = f"HTTP {status} {name} {message}".strip()
        return NotSupported(f"{what}: the host does not offer this method ({detail})")
    return error_for_response(status, headers, body, what)


async def get_latest_commit(
    client: XrpcClient, host_url: str, did: str, *, retry: RetryPolicy = DEFAULT_RETRY
) -> LatestCommit:
    """The current commit of `did`'s repo on `host_url` (its PDS)."""
    validate_supported_did(did)
    what = f"getLatestCommit {did}"
    body = await with_retries(
        lambda: client.query(
            host_url, GET_LATEST_COMMIT, {"did": did}, what=what, errors=latest_commit_error
        ),
        retry,
        what,
    )
    cid, rev = body.get("cid"), body.get("rev")
    if not isinstance(cid, str) or not is_cid_str(cid):
        raise InvalidResponse(f"{what}: the answer's cid is not a CID: {str(cid)[:80]!r}")
    if not isinstance(rev, str) or not is_valid_tid(rev):
        raise InvalidResponse(f"{what}: the answer's rev is not a TID: {str(rev)[:80]!r}")
    return LatestCommit(cid, rev)

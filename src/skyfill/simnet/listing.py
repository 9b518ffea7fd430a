"""What a simulated PDS answers to listRepos, listReposByCollection and getLatestCommit.

Pure functions of the network: (HTTP status, JSON body). Repos are listed in DID order;
the cursor is the last DID of a full page (as indigo's relay does, a page shorter than
the limit is the last; a full last page is followed by an empty one). Accounts deleted on
their PDS (not_found) or in the PLC (tombstoned) are absent; deactivated, takendown and
suspended ones are listed with `active: false` and their status, as the reference PDS does.

LISTING_FAULTS a host can be given (ListingOptions.fault):
  malformed_items   every page also carries three malformed items (bad DID, not an
                    object, bad head CID)
  cursor_loop       a request with a cursor is answered with that same cursor again
"""

from __future__ import annotations

from bisect import bisect_right
from dataclasses import dataclass

from skyfill.simnet.network import SimNetwork

LISTING_FAULTS = ("malformed_items", "cursor_loop")
UNLISTED = ("not_found", "tombstoned")
"""Account states absent from listRepos (deleted accounts)."""
LIST_REPOS_LIMIT = (1, 1000, 500)
BY_COLLECTION_LIMIT = (1, 2000, 500)
"""(minimum, maximum, default) of `limit`; values outside are clamped."""
_STATUS_ERRORS = {
    "deactivated": "RepoDeactivated",
    "takendown": "RepoTakendown",
    "suspended": "RepoSuspended",
}
MALFORMED_ITEMS = [
    {"did": "did:plc:NOT-A-VALID-DID", "head": None, "rev": "x", "active": True},
    "not an object",
    {"did": "did:plc:" + "a" * 24, "head": "not-a-cid", "rev": "3mbd3542k2222", "active": True},
]

Answer = tuple[int, dict]


@dataclass(kw_only=True, slots=True)
class ListingOptions:
    """How one simulated PDS host answers the listing methods."""

    list_by_collection: bool = True
    """False: listReposByCollection answers 501 MethodNotImplemented."""
    fault: str | None = None
    """One of LISTING_FAULTS, or None."""


def _error(status: int, error: str, message: str) -> Answer:
    return status, {"error": error, "message": message}


class _BadRequest(Exception):
    """A request the host refuses with 400 InvalidRequest."""


def _limit(raw: str | None, bounds: tuple[int, int, int]) -> int:
    low, high, default = bounds
    if raw is None or raw == "":
        return default
    try:
        return min(max(int(raw), low), high)
    except ValueError:
        raise _BadRequest(f"limit is not an integer: {raw!r}") from None


def _page(
    dids: list[str], cursor: str | None, raw_limit: str | None, bounds: tuple[int, int, int]
) -> tuple[list[str], str | None]:
    """The DIDs of one page of the sorted `dids` after `cursor`, and the next cursor."""
    limit = _limit(raw_limit, bounds)
    if cursor and not cursor.startswith("did:"):
        raise _BadRequest("Malformed cursor")
    start = bisect_right(dids, cursor) if cursor else 0
    page = dids[start : start + limit]
    return page, (page[-1] if len(page) == limit else None)


def _apply_fault(
    body: dict, options: ListingOptions, cursor: str | None, next_cursor: str | None
) -> dict:
    if options.fault == "malformed_items":
        body["repos"] = [*body["repos"], *MALFORMED_ITEMS]
    if options.fault == "cursor_loop" and cursor and next_cursor:
        body["cursor"] = cursor
    return body


def list_repos(
    network: SimNetwork,
    host: int,
    options: ListingOptions,
    cursor: str | None,
    limit: str | None,
) -> Answer:
    """com.atproto.sync.listRepos on host `host`."""
    dids = sorted(
        did
        for did, account in network.accounts.items()
        if account.host == host and account.status not in UNLISTED
    )
    try:
        page, next_cursor = _page(dids, cursor, limit, LIST_REPOS_LIMIT)
    except _BadRequest as exc:
        return _error(400, "InvalidRequest", str(exc))
    repos = []
    for did in page:
        built, status = network.repos[did], network.accounts[did].status
        item: dict = {"did": did, "head": built.commit, "rev": built.rev, "active": status == "ok"}
        if status != "ok":
            item["status"] = status
        repos.append(item)
    body: dict = {"repos": repos}
    if next_cursor:
        body["cursor"] = next_cursor
    return 200, _apply_fault(body, options, cursor, next_cursor)


def list_repos_by_collection(
    network: SimNetwork,
    host: int,
    options: ListingOptions,
    collections: list[str],
    cursor: str | None,
    limit: str | None,
) -> Answer:
    """com.atproto.sync.listReposByCollection on host `host`: active accounts with at
    least one record in any of `collections`."""
    if not options.list_by_collection:
        return _error(501, "MethodNotImplemented", "Method Not Implemented")
    if not collections:
        return _error(400, "InvalidRequest", 'Error: Params must have the property "collection"')
    prefixes = tuple(f"{c}/" for c in collections)
    dids = sorted(
        did
        for did, account in network.accounts.items()
        if account.host == host
        and account.status == "ok"
        and any(path.startswith(prefixes) for path in account.records)
    )
    try:
        page, next_cursor = _page(dids, cursor, limit, BY_COLLECTION_LIMIT)
    except _BadRequest as exc:
        return _error(400, "InvalidRequest", str(exc))
    body: dict = {"repos": [{"did": did} for did in page]}
    if next_cursor:
        body["cursor"] = next_cursor
    return 200, _apply_fault(body, options, cursor, next_cursor)


def latest_commit(network: SimNetwork, host: int, did: str) -> Answer:
    """com.atproto.sync.getLatestCommit on host `host`, with getRepo's errors."""
    if not did.startswith("did:"):
        return _error(400, "InvalidRequest", f"Invalid DID (got {did!r})")
    account = network.accounts.get(did)
    if account is None or account.host != host or account.status in UNLISTED:
        return _error(400, "RepoNotFound", f"Could not find repo for DID: {did}")
    if account.status in _STATUS_ERRORS:
        name = _STATUS_ERRORS[account.status]
        return _error(400, name, f"Repo has been {account.status}: {did}")
    built = network.repos[did]
    return 200, {"cid": built.commit, "rev": built.rev}

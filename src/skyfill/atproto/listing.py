"""Enumerating the repositories a host holds, and the hosts a relay follows, page by page,
resumable from a cursor.

`com.atproto.sync.listRepos` (PDS and relay) lists every repo with its head commit, rev
and account status; `com.atproto.sync.listReposByCollection` (relays with a collection
index, not the PDS) lists the DIDs that hold records of one collection;
`com.atproto.sync.listHosts` (relays) lists the upstream hosts (PDSes) a relay consumes,
by bare hostname, with the relay's view of each (status, account count, seq). All are
paged: each answer carries an opaque `cursor` to send back for the next page.

    listing = list_repos(client, "https://pds.example.com", cursor=saved)
    async for repos, cursor in listing:
        handle(repos)
        save(cursor)          # None after the last page
    listing.skipped           # malformed items left out, with listing.problems

A listing ends at a page without a cursor, or at an empty page (the reference PDS gives a
cursor with every non-empty page and ends with `{"repos": []}`; indigo's relay omits the
cursor on its last page). A server that hands back a cursor it gave before raises
CursorLoop; a host without the method raises NotSupported (see `listing_error`). Every
request goes through XrpcClient (host rate limits, private-network guard, stats), and a
page that fails transiently is asked for again as the RetryPolicy says.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Generic, NamedTuple, TypeVar

from skyfill.atproto.cid import is_cid_str
from skyfill.atproto.did import validate_supported_did
from skyfill.atproto.exceptions import (
    CursorLoop,
    InvalidDid,
    InvalidResponse,
    NotSupported,
    XrpcRequestError,
)
from skyfill.atproto.retry import DEFAULT_RETRY, RetryPolicy, with_retries
from skyfill.atproto.syntax import is_valid_tid
from skyfill.atproto.xrpc import UNSUPPORTED_ERRORS, XrpcClient, error_fields, error_for_response
from skyfill.errors import SkyfillError

LIST_REPOS = "com.atproto.sync.listRepos"
LIST_REPOS_BY_COLLECTION = "com.atproto.sync.listReposByCollection"
LIST_HOSTS = "com.atproto.sync.listHosts"
MAX_LIST_REPOS_LIMIT = 1000
"""listRepos: `limit` is 1..1000 (default 500); the reference PDS refuses others with 400."""
MAX_BY_COLLECTION_LIMIT = 2000
"""listReposByCollection: `limit` is 1..2000 (default 500)."""
MAX_LIST_HOSTS_LIMIT = 1000
"""listHosts: `limit` is 1..1000 (default 200)."""
HOST_STATUSES = ("active", "idle", "offline", "throttled", "banned")
"""The known values of `com.atproto.sync.defs#hostStatus` (others are kept as given)."""
PROBLEMS_KEPT = 20
"""How many messages about malformed items a listing keeps (the count is complete)."""

_NSID = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9-]+)+\.[a-zA-Z][a-zA-Z0-9]*$")
_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
T = TypeVar("T")
log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ListedRepo:
    """One item of listRepos: a repo the host holds, and its state there."""

    did: str
    head: str | None
    """CID of the repo's current commit (None when the host gave none)."""
    rev: str | None
    """The repo's current revision, a TID (None when the host gave none)."""
    active: bool
    """False for deactivated, taken down, suspended... accounts (see `status`)."""
    status: str | None
    """Why the account is not active: takendown, suspended, deleted, deactivated,
    desynchronized, throttled (or another value; None when the host makes no claim)."""


@dataclass(frozen=True, slots=True)
class ListedHost:
    """One item of listHosts: an upstream host of a relay, as the relay sees it."""

    hostname: str
    """A bare hostname, lower-cased, with a port when the relay gives one
    (`pds.example.com`, `127.0.0.1:2583`); no scheme."""
    status: str | None
    """active, idle, offline, throttled, banned (or another value; None: no claim)."""
    account_count: int | None
    """Accounts the relay associates with the host (the host may hold more)."""
    seq: int | None
    """The last event seq the relay has from the host."""


class Page(NamedTuple, Generic[T]):
    """One answer of a listing: its items, and the cursor of the next page (None: last)."""

    items: list[T]
    cursor: str | None


def listing_error(status: int, headers: Mapping[str, str], body: bytes, what: str) -> SkyfillError:
    """The typed error of a listing's non-200 answer.

    NotSupported when the host does not offer the method: 404, 501, an error named
    MethodNotImplemented / XRPCNotSupported, or 401 (these methods need no auth; the
    reference PDS answers 401 AuthMissing for methods it would only proxy for its users).
    429 and 5xx are transient as everywhere; any other answer is an XrpcRequestError.
    """
    name, message = error_fields(body)
    if status in (401, 404, 501) or name in UNSUPPORTED_ERRORS:
        detail = f"HTTP {status} {name} {message}".strip()
        return NotSupported(f"{what}: the host does not offer this method ({detail})")
    if status == 429 or status >= 500:
        return error_for_response(status, headers, body, what)
    return XrpcRequestError(f"{what}: HTTP {status} {name} {message}".strip())


def parse_listed_repo(item: object) -> ListedRepo:
    """A listRepos item, validated; raises InvalidDid or ValueError saying what is wrong."""
    if not isinstance(item, dict):
        raise ValueError(f"item is not an object: {str(item)[:80]!r}")
    did = item.get("did")
    if not isinstance(did, str):
        raise ValueError(f"item has no DID: {str(item)[:120]!r}")
    validate_supported_did(did)
    head = _optional_str(item, "head", did)
    if head is not None and not is_cid_str(head):
        raise ValueError(f"{did}: head is not a CID: {head[:80]!r}")
    rev = _optional_str(item, "rev", did)
    if rev is not None and not is_valid_tid(rev):
        raise ValueError(f"{did}: rev is not a TID: {rev[:80]!r}")
    status = _optional_str(item, "status", did)
    active = item.get("active")
    if active is None:
        active = status is None  # hosts older than the field; a status implies inactive
    elif not isinstance(active, bool):
        raise ValueError(f"{did}: active is not a boolean: {active!r}")
    return ListedRepo(did=did, head=head, rev=rev, active=active, status=status)


def parse_listed_host(item: object) -> ListedHost:
    """A listHosts item, validated; raises ValueError saying what is wrong."""
    if not isinstance(item, dict):
        raise ValueError(f"item is not an object: {str(item)[:80]!r}")
    hostname = item.get("hostname")
    if not isinstance(hostname, str):
        raise ValueError(f"item has no hostname: {str(item)[:120]!r}")
    hostname = check_hostname(hostname)
    status = _optional_str(item, "status", hostname)
    return ListedHost(
        hostname=hostname,
        status=status,
        account_count=_optional_count(item, "accountCount", hostname),
        seq=_optional_count(item, "seq", hostname),
    )


def check_hostname(hostname: str) -> str:
    """`hostname` lower-cased if it is a DNS name or IPv4 address with an optional port
    (what listHosts gives: no scheme, no path); raises ValueError otherwise."""
    name, colon, port = hostname.lower().partition(":")
    labels = name.split(".")
    valid = (
        0 < len(name) <= 253
        and all(_LABEL.match(label) for label in labels)
        and (not colon or (port.isdigit() and len(port) <= 5 and 0 < int(port) < 65536))
    )
    if not valid:
        raise ValueError(f"not a hostname: {hostname[:80]!r}")
    return hostname.lower()


def _optional_count(item: dict, key: str, hostname: str) -> int | None:
    value = item.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{hostname}: {key} is not a count: {str(value)[:80]!r}")
    return value


def parse_listed_did(item: object) -> str:
    """A listReposByCollection item's DID, validated (InvalidDid or ValueError)."""
    if not isinstance(item, dict) or not isinstance(item.get("did"), str):
        raise ValueError(f"item has no DID: {str(item)[:120]!r}")
    return validate_supported_did(item["did"])


def _optional_str(item: dict, key: str, name: str) -> str | None:
    value = item.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ValueError(f"{name}: {key} is not a string: {str(value)[:80]!r}")
    return value


class Listing(Generic[T]):
    """The pages of one paged listing from a start cursor on: an async iterator of Page.

    Counters for the caller: `pages`, `listed` (valid items), `skipped` (malformed items
    left out) with the first `problems`; `cursor` is the last cursor the server gave (the
    start cursor until then), `done` whether the listing reached its end.
    """

    def __init__(
        self,
        client: XrpcClient,
        host_url: str,
        nsid: str,
        params: dict[str, str | int],
        parse: Callable[[object], T],
        *,
        cursor: str | None,
        retry: RetryPolicy,
        field: str = "repos",
    ) -> None:
        self._client = client
        self._field = field
        self._host_url = host_url
        self._nsid = nsid
        self._params = params
        self._parse = parse
        self._retry = retry
        self._seen: set[str] = {cursor} if cursor else set()
        self.cursor = cursor or None
        self.pages = 0
        self.listed = 0
        self.skipped = 0
        self.problems: list[str] = []
        self.done = False

    def __aiter__(self) -> Listing[T]:
        return self

    async def __anext__(self) -> Page[T]:
        if self.done:
            raise StopAsyncIteration
        params = dict(self._params)
        if self.cursor:
            params["cursor"] = self.cursor
        what = f"{self._nsid.rsplit('.', 1)[-1]} {self._host_url}"
        body = await with_retries(
            lambda: self._client.query(
                self._host_url, self._nsid, params, what=what, errors=listing_error
            ),
            self._retry,
            what,
        )
        raw, cursor = _page_fields(body, self._field, what)
        if not raw:
            self.done = True
            raise StopAsyncIteration
        if cursor is not None and cursor in self._seen:
            raise CursorLoop(
                f"{what}: the server answered cursor {cursor[:80]!r} again "
                f"(after {self.pages + 1} pages): the listing would never end"
            )
        items = self._parse_items(raw, what)
        self.pages += 1
        if cursor is None:
            self.done = True
        else:
            self._seen.add(cursor)
            self.cursor = cursor
        return Page(items, cursor)

    def _parse_items(self, raw: list, what: str) -> list[T]:
        items: list[T] = []
        problems: list[str] = []
        for item in raw:
            try:
                items.append(self._parse(item))
            except (InvalidDid, ValueError) as exc:
                problems.append(str(exc))
        if problems:
            self.skipped += len(problems)
            self.problems += problems[: PROBLEMS_KEPT - len(self.problems)]
            log.warning(
                "%s: left out %d malformed item(s) of %d (first: %s)",
                what,
                len(problems),
                len(raw),
                problems[0],
                extra={"event": "listing_malformed", "skipped": len(problems)},
            )
        self.listed += len(items)
        return items


def _page_fields(body: dict, field: str, what: str) -> tuple[list, str | None]:
    raw = body.get(field)
    if not isinstance(raw, list):
        raise InvalidResponse(f"{what}: the answer has no `{field}` list")
    cursor = body.get("cursor")
    if cursor is not None and not isinstance(cursor, str):
        raise InvalidResponse(f"{what}: the answer's cursor is not a string: {cursor!r}")
    return raw, cursor or None


def _check_limit(limit: int, maximum: int, nsid: str) -> None:
    if not 1 <= limit <= maximum:
        raise ValueError(f"{nsid}: limit must be 1..{maximum}, not {limit}")


def list_repos(
    client: XrpcClient,
    host_url: str,
    *,
    cursor: str | None = None,
    limit: int = MAX_LIST_REPOS_LIMIT,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Listing[ListedRepo]:
    """The pages of `com.atproto.sync.listRepos` on `host_url` (a PDS or a relay), starting
    after `cursor` (a cursor a page of an earlier listing of the same host gave)."""
    _check_limit(limit, MAX_LIST_REPOS_LIMIT, LIST_REPOS)
    return Listing(
        client,
        host_url,
        LIST_REPOS,
        {"limit": limit},
        parse_listed_repo,
        cursor=cursor,
        retry=retry,
    )


def list_repos_by_collection(
    client: XrpcClient,
    host_url: str,
    collection: str,
    *,
    cursor: str | None = None,
    limit: int = MAX_BY_COLLECTION_LIMIT,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Listing[str]:
    """The pages of DIDs that hold records of `collection` (an NSID), from
    `com.atproto.sync.listReposByCollection` on `host_url`. A host without the method
    raises NotSupported on the first page: list_repos and a look at the records instead."""
    _check_limit(limit, MAX_BY_COLLECTION_LIMIT, LIST_REPOS_BY_COLLECTION)
    if not _NSID.match(collection) or len(collection) > 317:
        raise ValueError(f"{LIST_REPOS_BY_COLLECTION}: not a collection NSID: {collection!r}")
    return Listing(
        client,
        host_url,
        LIST_REPOS_BY_COLLECTION,
        {"collection": collection, "limit": limit},
        parse_listed_did,
        cursor=cursor,
        retry=retry,
    )


def list_hosts(
    client: XrpcClient,
    relay_url: str,
    *,
    cursor: str | None = None,
    limit: int = MAX_LIST_HOSTS_LIMIT,
    retry: RetryPolicy = DEFAULT_RETRY,
) -> Listing[ListedHost]:
    """The pages of `com.atproto.sync.listHosts` on `relay_url`: the hosts it consumes from,
    starting after `cursor`. A server without the method raises NotSupported."""
    _check_limit(limit, MAX_LIST_HOSTS_LIMIT, LIST_HOSTS)
    return Listing(
        client,
        relay_url,
        LIST_HOSTS,
        {"limit": limit},
        parse_listed_host,
        cursor=cursor,
        retry=retry,
        field="hosts",
    )

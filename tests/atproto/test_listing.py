"""listRepos / listReposByCollection listings against the simulated network, over HTTP.

The network: 41 accounts on 4 PDS hosts, one account in each terminal state (spread over
the hosts). Host 1 does not implement listReposByCollection; host 2 adds three malformed
items to every page; host 3 answers a request with a cursor with that same cursor.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from multidict import CIMultiDict

from skyfill.atproto.exceptions import (
    CursorLoop,
    NotSupported,
    XrpcRequestError,
)
from skyfill.atproto.listing import (
    ListedRepo,
    Listing,
    list_repos,
    list_repos_by_collection,
    listing_error,
)
from skyfill.atproto.repo import decode_repo
from skyfill.errors import RateLimited, ServerError
from tests.helpers import Server, get_json, host_key, start_simnet, xrpc_client

STATUSES = "deactivated,takendown,suspended,not_found,tombstoned"
BLOCK = "app.bsky.graph.block"


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_simnet(
        tmp_path_factory.mktemp("listing-net"),
        accounts=41,
        hosts=4,
        mean_records=12,
        statuses=STATUSES,
        no_list_by_collection="1",
        listing_faults="2=malformed_items,3=cursor_loop",
    )
    try:
        yield server
    finally:
        server.stop()


def _pds(net: Server, index: int) -> str:
    return net.ready["pds"][index]


def expected_listing(truth: dict, pds_url: str) -> list[ListedRepo]:
    """What listRepos on `pds_url` must answer: its accounts but the deleted ones, in DID
    order, inactive ones with their status."""
    listed = []
    for did, repo in sorted(truth["repos"].items()):
        if repo["pds"] != pds_url or repo["status"] in ("not_found", "tombstoned"):
            continue
        ok = repo["status"] == "ok"
        status = None if ok else repo["status"]
        listed.append(ListedRepo(did, repo["commit"], repo["rev"], ok, status))
    return listed


def holders(truth: dict, pds_url: str, collection: str) -> list[str]:
    """The active accounts on `pds_url` with a record of `collection`, in DID order."""
    return sorted(
        did
        for did, repo in truth["repos"].items()
        if repo["pds"] == pds_url
        and repo["status"] == "ok"
        and any(r["path"].startswith(f"{collection}/") for r in repo["records"])
    )


async def collect(listing: Listing) -> tuple[list, list[str | None]]:
    """Every item of a listing, and the cursor of each page."""
    items: list = []
    cursors: list[str | None] = []
    async for page, cursor in listing:
        items += page
        cursors.append(cursor)
    return items, cursors


async def test_list_repos_lists_each_host_as_the_truth_says(net: Server) -> None:
    truth = net.ready["truth_data"]
    statuses = set()
    async with xrpc_client() as (client, _):
        for index in range(4):
            pds = _pds(net, index)
            listing = list_repos(client, pds)
            items, cursors = await collect(listing)
            assert items == expected_listing(truth, pds), index
            assert cursors == [None] and listing.done  # one short page: the last
            statuses |= {item.status for item in items}
    # every inactive state is listed somewhere; the deleted accounts nowhere
    assert statuses == {None, "deactivated", "takendown", "suspended"}
    listed = {item.did for item in items}
    deleted = {d for d, r in truth["repos"].items() if r["status"] in ("not_found", "tombstoned")}
    assert len(deleted) == 2 and not deleted & listed


async def test_small_pages_list_every_repo_once(net: Server) -> None:
    pds = _pds(net, 0)
    expected = expected_listing(net.ready["truth_data"], pds)
    assert len(expected) == 10
    async with xrpc_client() as (client, limiter):
        listing = list_repos(client, pds, limit=3)
        items, cursors = await collect(listing)
        assert items == expected
        assert len(cursors) == 4 and cursors[-1] is None and None not in cursors[:-1]
        assert (listing.pages, listing.listed, listing.done) == (4, 10, True)
        assert limiter.snapshot()[host_key(pds)]["requests"] == 4
        # 10 = 2 full pages of 5: the simnet gives a cursor with a full page, and the
        # empty page after it ends the listing
        listing = list_repos(client, pds, limit=5)
        items, cursors = await collect(listing)
        assert items == expected and len(cursors) == 2 and cursors[-1] is not None
        assert listing.done and listing.cursor == cursors[-1]
        assert limiter.snapshot()[host_key(pds)]["requests"] == 4 + 3


async def test_resume_from_a_saved_cursor_lists_exactly_the_rest(net: Server) -> None:
    pds = _pds(net, 1)
    expected = expected_listing(net.ready["truth_data"], pds)
    async with xrpc_client() as (client, limiter):
        seen: list[ListedRepo] = []
        saved = None
        async for page, cursor in list_repos(client, pds, limit=2):
            seen += page
            saved = cursor  # what a caller persists after handling the page
            if len(seen) == 4:
                break  # "killed" after two pages
        assert saved is not None and seen == expected[:4]
        before = limiter.snapshot()[host_key(pds)]["requests"]
        resumed = list_repos(client, pds, cursor=saved, limit=2)
        rest, _ = await collect(resumed)
        assert rest == expected[4:]  # nothing listed twice, nothing missed
        pages = -(-len(rest) // 2) + (len(rest) % 2 == 0)  # a full last page: one empty more
        assert limiter.snapshot()[host_key(pds)]["requests"] - before == pages


async def test_malformed_items_are_left_out_and_counted(net: Server) -> None:
    pds = _pds(net, 2)
    async with xrpc_client() as (client, _):
        listing = list_repos(client, pds, limit=4)
        items, _ = await collect(listing)
    assert items == expected_listing(net.ready["truth_data"], pds)
    assert listing.pages == 3 and listing.skipped == 3 * listing.pages
    assert listing.listed == len(items)
    problems = " | ".join(listing.problems)
    for needle in ("malformed did:plc", "not an object", "head is not a CID"):
        assert needle in problems, problems


async def test_a_server_repeating_a_cursor_is_stopped(net: Server) -> None:
    pds = _pds(net, 3)
    async with xrpc_client() as (client, limiter):
        listing = list_repos(client, pds, limit=2)
        first, cursor = await anext(listing)
        assert len(first) == 2 and cursor is not None
        with pytest.raises(CursorLoop) as caught:
            await anext(listing)
        assert limiter.snapshot()[host_key(pds)]["requests"] == 2
    message = str(caught.value)
    assert "\n" not in message and cursor in message and "never end" in message
    assert listing.pages == 1 and listing.cursor == cursor and not listing.done


async def test_a_bad_cursor_is_a_request_error(net: Server) -> None:
    async with xrpc_client() as (client, _):
        with pytest.raises(XrpcRequestError, match="Malformed cursor"):
            await anext(list_repos(client, _pds(net, 0), cursor="garbage"))


async def test_limits_out_of_range_are_refused_before_any_request(net: Server) -> None:
    async with xrpc_client() as (client, limiter):
        for bad in (0, 1001):
            with pytest.raises(ValueError, match=r"limit must be 1\.\.1000"):
                list_repos(client, _pds(net, 0), limit=bad)
        with pytest.raises(ValueError, match=r"limit must be 1\.\.2000"):
            list_repos_by_collection(client, _pds(net, 0), BLOCK, limit=2001)
        with pytest.raises(ValueError, match="not a collection NSID"):
            list_repos_by_collection(client, _pds(net, 0), "app.bsky")
        assert limiter.snapshot() == {}


async def test_list_repos_by_collection_lists_the_holders(net: Server) -> None:
    truth = net.ready["truth_data"]
    pds = _pds(net, 0)
    # a sparse collection, so that the filter is seen to filter
    assert 0 < len(holders(truth, pds, BLOCK)) < 10
    async with xrpc_client() as (client, _):
        for collection in (BLOCK, "app.bsky.feed.post"):
            for limit in (1, 2, 2000):
                listing = list_repos_by_collection(client, pds, collection, limit=limit)
                dids, _ = await collect(listing)
                assert dids == holders(truth, pds, collection), (collection, limit)
        listing = list_repos_by_collection(client, pds, "com.example.nothing")
        assert await collect(listing) == ([], []) and listing.done


async def test_without_list_repos_by_collection_the_caller_falls_back(net: Server) -> None:
    """Host 1 answers 501 MethodNotImplemented: NotSupported; listRepos and a look at each
    active repo's records give the same DIDs."""
    pds = _pds(net, 1)
    async with xrpc_client() as (client, limiter):
        with pytest.raises(NotSupported, match="501 MethodNotImplemented"):
            await anext(list_repos_by_collection(client, pds, BLOCK))
        assert limiter.snapshot()[host_key(pds)]["requests"] == 1  # not retried
        found = []
        async for repos, _ in list_repos(client, pds, limit=4):
            for repo in repos:
                if not repo.active:
                    continue
                car = await client.get_repo(pds, repo.did, 1 << 24)
                if any(c == BLOCK for c in decode_repo(car, repo.did).collections):
                    found.append(repo.did)
    assert found == holders(net.ready["truth_data"], pds, BLOCK) and found


async def test_listing_requests_wait_for_the_host_limiter(net: Server) -> None:
    """Every page is one request counted and paced by the host's limiter (4 per second,
    a burst of 4): 11 requests take at least (11 - 4) / 4 s."""
    pds = _pds(net, 0)
    async with xrpc_client(rate="4/1s") as (client, limiter):
        started = time.monotonic()
        items, _ = await collect(list_repos(client, pds, limit=1))
        elapsed = time.monotonic() - started
        host = limiter.snapshot()[host_key(pds)]
    assert len(items) == 10
    assert host["requests"] == 11 and host["by_status"] == {"200": 11}
    assert elapsed >= 1.6 and host["wait_seconds"] > 1.0


async def test_a_server_rate_limit_is_learned_and_waited_out(tmp_path: Path) -> None:
    """A host allowing 3 requests a second: the listing completes, paced by what the
    server's RateLimit headers say, with at most the first burst refused."""
    net = start_simnet(tmp_path / "net", accounts=12, hosts=1, mean_records=3, rate_limit="3/1s")
    try:
        pds = net.ready["pds"][0]
        async with xrpc_client() as (client, limiter):
            items, _ = await collect(list_repos(client, pds, limit=1))
            host = limiter.snapshot()[host_key(pds)]
        server = get_json(f"{pds}/_simnet/stats")["hosts"][0]
    finally:
        net.stop()
    assert len(items) == 12
    assert host["server_limit"] == 3 and host["rate_limited"] == server["limited"] <= 1
    assert host["requests"] == 13 + server["limited"]


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (404, b'{"message":"Not Found"}', NotSupported),  # indigo's echo router
        (404, b"<html>Cannot GET</html>", NotSupported),
        (501, b'{"error":"MethodNotImplemented","message":"Method Not Implemented"}', NotSupported),
        (400, b'{"error":"XRPCNotSupported","message":"no"}', NotSupported),
        (401, b'{"error":"AuthMissing","message":"Authentication Required"}', NotSupported),
        (400, b'{"error":"InvalidRequest","message":"Malformed cursor"}', XrpcRequestError),
        (400, b'{"error":"InvalidRequest","message":"repo not found"}', XrpcRequestError),
        (429, b"", RateLimited),
        (503, b"<html>down</html>", ServerError),
    ],
)
def test_listing_error_mapping(status: int, body: bytes, error: type) -> None:
    mapped = listing_error(status, CIMultiDict(), body, "listRepos http://h")
    assert type(mapped) is error
    assert "\n" not in mapped.message and mapped.message.startswith("listRepos http://h")

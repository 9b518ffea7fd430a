"""Repo discovery against the reference TypeScript PDS: listRepos, getLatestCommit and
listReposByCollection answer as skyfill's listing code expects.

Facts these tests pin (the reference PDS, @atproto/pds via @atproto/dev-env 0.6.7):
- listRepos lists a host's accounts ordered by (createdAt, did) with the cursor
  `<createdAt ms>::<did>`; every non-empty page carries a cursor, even the last, and the
  listing ends with `{"repos": []}`. Deleted accounts are absent; deactivated and taken
  down ones are listed with `active: false` and their status. A limit outside 1..1000 or
  a malformed cursor is refused with 400 InvalidRequest.
- getLatestCommit answers the commit CID and rev that the seeding saw; a deactivated,
  taken down, deleted or unknown repo answers 400 RepoDeactivated / RepoTakendown /
  RepoNotFound, as getRepo does.
- listReposByCollection is not a PDS method: the PDS hands unknown methods to its proxy
  catch-all (packages/pds/src/pipethrough.ts), which without a user's token answers
  401 AuthMissing. skyfill reads that as NotSupported (fall back to listRepos).
"""

from __future__ import annotations

import pytest

from skyfill.atproto.exceptions import (
    NotSupported,
    RepoDeactivated,
    RepoNotFound,
    RepoTakendown,
    XrpcRequestError,
)
from skyfill.atproto.latest_commit import LatestCommit, get_latest_commit
from skyfill.atproto.listing import LIST_REPOS, ListedRepo, list_repos, list_repos_by_collection
from tests.helpers import Server, host_key, xrpc_client

pytestmark = pytest.mark.refpds

NEVER_EXISTED = "did:plc:neverexistedaaaaaaaaaaaa"
ERRORS = {"deactivated": RepoDeactivated, "takendown": RepoTakendown, "not_found": RepoNotFound}


def _expected(refpds: Server, pds: str) -> dict[str, ListedRepo]:
    """The truth's accounts on `pds`, deleted ones left out, as listRepos items."""
    listed = {}
    for did, repo in refpds.ready["truth_data"]["repos"].items():
        if repo["pds"] != pds or repo.get("deleted"):
            continue
        ok = repo["status"] == "ok"
        status = None if ok else repo["status"]
        listed[did] = ListedRepo(did, repo["commit"], repo["rev"], ok, status)
    return listed


async def test_list_repos_lists_exactly_the_accounts_of_each_host(refpds: Server) -> None:
    truth = refpds.ready["truth_data"]["repos"]
    statuses = set()
    async with xrpc_client() as (client, limiter):
        for pds in refpds.ready["pds"]:
            listing = list_repos(client, pds)
            pages = [page async for page in listing]
            items = [item for page in pages for item in page.items]
            assert len(items) == len({item.did for item in items})  # each once
            assert {item.did: item for item in items} == _expected(refpds, pds)
            statuses |= {item.status for item in items}
            # one page with a cursor, then the empty page that ends the listing
            assert len(pages) == 1 and pages[0].cursor is not None and listing.done
            assert limiter.snapshot()[host_key(pds)]["requests"] == 2
            assert listing.skipped == 0
    assert statuses == {None, "deactivated", "takendown"}
    deleted = [did for did, repo in truth.items() if repo.get("deleted")]
    assert len(deleted) == 1  # and listed nowhere (the comparison above)


async def test_paging_resumes_from_a_saved_cursor(refpds: Server) -> None:
    pds = refpds.ready["pds"][0]
    expected = _expected(refpds, pds)
    assert len(expected) == 6
    async with xrpc_client() as (client, limiter):
        pages = [page async for page in list_repos(client, pds, limit=2)]
        assert [len(p.items) for p in pages] == [2, 2, 2]
        assert all(p.cursor for p in pages)
        assert limiter.snapshot()[host_key(pds)]["requests"] == 4
        order = [item.did for p in pages for item in p.items]
        assert set(order) == set(expected)
        rest = [page async for page in list_repos(client, pds, cursor=pages[0].cursor, limit=2)]
        assert [item.did for p in rest for item in p.items] == order[2:]


async def test_get_latest_commit_answers_the_truth(refpds: Server) -> None:
    truth = refpds.ready["truth_data"]["repos"]
    async with xrpc_client() as (client, _):
        for did, repo in truth.items():
            if repo["status"] == "ok":
                latest = await get_latest_commit(client, repo["pds"], did)
                assert latest == LatestCommit(repo["commit"], repo["rev"]), did
            else:
                with pytest.raises(ERRORS[repo["status"]]):
                    await get_latest_commit(client, repo["pds"], did)
        with pytest.raises(RepoNotFound):
            await get_latest_commit(client, refpds.ready["pds"][0], NEVER_EXISTED)
    assert {r["status"] for r in truth.values()} == {"ok", *ERRORS}


async def test_list_repos_by_collection_is_not_offered_by_the_reference_pds(
    refpds: Server,
) -> None:
    # Finding: the reference PDS does not implement listReposByCollection (a relay-side
    # collection index does, e.g. indigo's collectiondir). Its proxy catch-all answers an
    # unauthenticated call with 401 AuthMissing, which skyfill maps to NotSupported.
    pds = refpds.ready["pds"][0]
    async with xrpc_client() as (client, limiter):
        with pytest.raises(NotSupported, match="401 AuthMissing") as caught:
            await anext(list_repos_by_collection(client, pds, "app.bsky.feed.post"))
        assert limiter.snapshot()[host_key(pds)]["requests"] == 1
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize(
    ("params", "needle"),
    [
        ({"limit": 0}, "minimum 1"),
        ({"limit": 1001}, "maximum 1000"),
        ({"cursor": "garbage"}, "Malformed cursor"),
    ],
)
async def test_the_reference_pds_refuses_bad_listing_params(
    refpds: Server, params: dict, needle: str
) -> None:
    """Why list_repos checks `limit` itself: the PDS refuses, rather than clamps."""
    async with xrpc_client() as (client, _):
        with pytest.raises(XrpcRequestError, match=needle):
            await client.query(refpds.ready["pds"][0], LIST_REPOS, params)


async def test_listing_learns_the_pds_rate_limit(refpds_limited: Server) -> None:
    """With its rate limits on, the PDS's RateLimit headers on listRepos reach the host
    limiter (3000 per 5 minutes for reads other than getRepo)."""
    pds = refpds_limited.ready["pds"][0]
    async with xrpc_client() as (client, limiter):
        items = [item async for page, _ in list_repos(client, pds, limit=1) for item in page]
        host = limiter.snapshot()[host_key(pds)]
    assert len(items) == 4
    assert host["requests"] == 5 and host["rate_limited"] == 0
    assert host["server_limit"] == 3000 and host["server_window_s"] == 300

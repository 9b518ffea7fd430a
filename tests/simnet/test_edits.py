"""Changing a running simulated network (POST /_simnet/edit): what the sync methods, the
repo download and the PLC then answer."""

from __future__ import annotations

import json
import urllib.error
from collections.abc import Iterator

import pytest

from skyfill.atproto.exceptions import RepoDeactivated
from skyfill.atproto.latest_commit import LatestCommit, get_latest_commit
from skyfill.atproto.listing import list_repos
from skyfill.atproto.repo import decode_repo
from skyfill.atproto.xrpc import XrpcClient
from tests.helpers import Server, get_json, start_simnet, xrpc_client


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_simnet(tmp_path_factory.mktemp("edits-net"), accounts=8, hosts=2)
    try:
        yield server
    finally:
        server.stop()


def _edit(net: Server, **edit: object) -> dict:
    return get_json(f"{net.ready['pds'][0]}/_simnet/edit", edit)


async def _paths(client: XrpcClient, pds: str, did: str) -> dict[str, str]:
    car = await client.get_repo(pds, did, 1 << 24)
    decoded = decode_repo(car, did)
    return {
        f"{c}/{k}": cid
        for c, k, cid in zip(decoded.collections, decoded.rkeys, decoded.cids, strict=True)
    }


async def _listed(client: XrpcClient, pds: str) -> dict:
    return {r.did: r async for page, _ in list_repos(client, pds) for r in page}


async def test_record_edits_make_new_commits(net: Server) -> None:
    did, repo = next(iter(net.ready["truth_data"]["repos"].items()))
    pds = repo["pds"]
    async with xrpc_client() as (client, _):
        assert await get_latest_commit(client, pds, did) == (repo["commit"], repo["rev"])
        added = _edit(net, action="add_post", did=did, text="hello")
        assert added["rev"] > repo["rev"] and added["commit"] != repo["commit"]
        assert await get_latest_commit(client, pds, did) == LatestCommit(
            added["commit"], added["rev"]
        )
        listed = (await _listed(client, pds))[did]
        assert (listed.head, listed.rev) == (added["commit"], added["rev"])
        paths = await _paths(client, pds, did)
        assert paths[added["path"]] == added["cid"]
        assert len(paths) == len(repo["records"]) + 1

        deleted = _edit(net, action="delete_record", did=did, path=added["path"])
        assert deleted["rev"] > added["rev"] and added["path"] not in await _paths(client, pds, did)
        profile = _edit(net, action="update_profile", did=did, description="new")
        old_profile = {r["path"]: r["cid"] for r in repo["records"]}["app.bsky.actor.profile/self"]
        assert profile["cid"] != old_profile
        assert (await _paths(client, pds, did))[profile["path"]] == profile["cid"]
        truth = get_json(f"{pds}/_simnet/truth")["repos"][did]
        assert (truth["rev"], truth["commit"]) == (profile["rev"], profile["commit"])
        assert {r["path"]: r["cid"] for r in truth["records"]} == await _paths(client, pds, did)


async def test_status_changes_show_in_listing_and_latest_commit(net: Server) -> None:
    did, repo = list(net.ready["truth_data"]["repos"].items())[2]
    pds = repo["pds"]
    async with xrpc_client() as (client, _):
        _edit(net, action="set_status", did=did, status="deactivated")
        listed = (await _listed(client, pds))[did]
        assert (listed.active, listed.status) == (False, "deactivated")
        with pytest.raises(RepoDeactivated):
            await get_latest_commit(client, pds, did)
        _edit(net, action="set_status", did=did, status="not_found")
        assert did not in await _listed(client, pds)
        _edit(net, action="set_status", did=did, status="ok")
        listed = (await _listed(client, pds))[did]
        assert (listed.active, listed.status, listed.rev) == (True, None, repo["rev"])


async def test_a_created_account_is_listed_and_resolvable(net: Server) -> None:
    pds = net.ready["pds"][1]
    created = _edit(net, action="create_account", host=1, records=5)
    did = created["did"]
    document = get_json(f"{net.ready['plc']}/{did}")
    assert document["service"][0]["serviceEndpoint"] == pds
    async with xrpc_client() as (client, _):
        assert did in await _listed(client, pds)
        assert did not in await _listed(client, net.ready["pds"][0])
        assert await get_latest_commit(client, pds, did) == (created["commit"], created["rev"])
        assert len(await _paths(client, pds, did)) == 5


@pytest.mark.parametrize(
    "edit",
    [
        {"action": "add_post", "did": "did:plc:" + "z" * 24},
        {"action": "explode"},
        {"action": "set_status", "did": None, "status": "gone"},
        {"action": "create_account", "host": 9},
    ],
)
def test_a_bad_edit_is_refused(net: Server, edit: dict) -> None:
    with pytest.raises(urllib.error.HTTPError) as caught:
        get_json(f"{net.ready['pds'][0]}/_simnet/edit", edit)
    assert caught.value.code == 400
    assert json.loads(caught.value.read())["error"] == "InvalidRequest"

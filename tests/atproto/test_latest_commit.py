"""getLatestCommit against the simulated network: the truth's commit for ok repos, and
getRepo's typed errors for every other state."""

from __future__ import annotations

from pathlib import Path

import pytest
from multidict import CIMultiDict

from skyfill.atproto.exceptions import (
    InvalidDid,
    NotSupported,
    RepoDeactivated,
    RepoNotFound,
    RepoSuspended,
    RepoTakendown,
)
from skyfill.atproto.latest_commit import LatestCommit, get_latest_commit, latest_commit_error
from skyfill.errors import ServerError
from tests.helpers import Server, host_key, xrpc_client

ERRORS = {
    "deactivated": RepoDeactivated,
    "takendown": RepoTakendown,
    "suspended": RepoSuspended,
    "not_found": RepoNotFound,
    "tombstoned": RepoNotFound,
}


async def test_each_state_answers_as_get_repo_does(simnet: Server) -> None:
    truth = simnet.ready["truth_data"]["repos"]
    seen = set()
    async with xrpc_client() as (client, limiter):
        for did, repo in truth.items():
            if repo["status"] == "ok":
                latest = await get_latest_commit(client, repo["pds"], did)
                assert latest == LatestCommit(repo["commit"], repo["rev"]), did
            else:
                with pytest.raises(ERRORS[repo["status"]]) as caught:
                    await get_latest_commit(client, repo["pds"], did)
                assert did in str(caught.value) and "\n" not in str(caught.value)
            seen.add(repo["status"])
        requests = sum(h["requests"] for h in limiter.snapshot().values())
    assert seen == {"ok", *ERRORS}
    assert requests == len(truth)  # one request each: terminal errors are not retried


async def test_a_repo_asked_of_another_host_or_unknown_is_not_found(simnet: Server) -> None:
    truth = simnet.ready["truth_data"]
    did, repo = next((d, r) for d, r in truth["repos"].items() if r["status"] == "ok")
    other = next(url for url in truth["pds"] if url != repo["pds"])
    async with xrpc_client() as (client, _):
        with pytest.raises(RepoNotFound):
            await get_latest_commit(client, other, did)
        listed = Path(simnet.ready["dids"]).read_text().split()
        never = [did for did in listed if did not in truth["repos"]]
        assert never
        with pytest.raises(RepoNotFound):
            await get_latest_commit(client, repo["pds"], never[0])


async def test_an_invalid_did_is_refused_before_any_request(simnet: Server) -> None:
    pds = simnet.ready["pds"][0]
    async with xrpc_client() as (client, limiter):
        with pytest.raises(InvalidDid):
            await get_latest_commit(client, pds, "did:plc:short")
        assert host_key(pds) not in limiter.snapshot()


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (400, b'{"error":"RepoNotFound","message":"Could not find repo"}', RepoNotFound),
        (400, b'{"error":"RepoDeactivated","message":"x"}', RepoDeactivated),
        (400, b'{"error":"RepoTakendown","message":"x"}', RepoTakendown),
        (400, b'{"error":"RepoSuspended","message":"x"}', RepoSuspended),
        (404, b'{"error":"NotFound","message":"Repo not found"}', RepoNotFound),
        (501, b'{"error":"MethodNotImplemented","message":"Method Not Implemented"}', NotSupported),
        (400, b'{"error":"XRPCNotSupported","message":"no"}', NotSupported),
        (502, b"<html>bad gateway</html>", ServerError),
    ],
)
def test_latest_commit_error_mapping(status: int, body: bytes, error: type) -> None:
    mapped = latest_commit_error(status, CIMultiDict(), body, "getLatestCommit did:plc:x")
    assert type(mapped) is error and mapped.message.startswith("getLatestCommit did:plc:x")

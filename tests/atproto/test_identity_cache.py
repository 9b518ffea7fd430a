"""The identity cache keeps the most recently used identities up to its size (a fetch
process is given 1/N of it, so that N of them hold what one process would)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from skyfill.atproto.identity import IdentityResolver
from tests.helpers import Server, start_simnet, xrpc_client


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_simnet(tmp_path_factory.mktemp("idnet"), accounts=8, hosts=1, mean_records=1)
    yield server
    server.stop()


def test_the_least_recently_used_identities_leave_a_full_cache(net: Server) -> None:
    dids = Path(net.ready["dids"]).read_text().split()

    async def scenario() -> list[bool]:
        async with xrpc_client() as (client, _):
            resolver = IdentityResolver(client, net.ready["plc"], cache_size=3)
            for did in dids[:5]:
                await resolver.resolve(did)
            assert resolver.cached(dids[2]) is not None  # used again: now the newest
            await resolver.resolve(dids[5])
            return [resolver.knows(did) for did in dids[:6]]

    # 0 and 1 left when 3 and 4 came; 3 when 5 came, since 2 had been used since
    assert asyncio.run(scenario()) == [False, False, True, False, True, True]


def test_a_look_up_joined_by_another_survives_its_makers_cancellation(net: Server) -> None:
    """Two tasks ask for one DID: the second joins the first's request. When the first
    is cancelled (the stream dropped a look-up it no longer needs), the second still gets
    the identity (its own request), not the first's CancelledError."""
    did = Path(net.ready["dids"]).read_text().split()[0]

    async def scenario() -> str:
        async with xrpc_client() as (client, _):
            resolver = IdentityResolver(client, net.ready["plc"])
            maker = asyncio.create_task(resolver.resolve(did, fresh=True))
            await asyncio.sleep(0)  # the maker's request is in flight
            assert resolver.knows(did) and resolver.cached(did) is None
            joiner = asyncio.create_task(resolver.resolve(did))
            await asyncio.sleep(0)  # the joiner waits on the maker's request
            maker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await maker
            identity = await joiner
            return identity.did

    assert asyncio.run(scenario()) == did

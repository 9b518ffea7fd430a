"""The event stream of the reference TypeScript PDS (`com.atproto.sync.subscribeRepos`),
read with skyfill's client, decoder and sync 1.1 verifier.

It lives beside the other reference-PDS tests to share their session's network (the
`refpds` fixture, which no test writes to). Replayed from cursor 0, every frame decodes;
every `#commit` verifies with the key of its DID document (resolved as the backfill resolves
it) and, from the second commit of a repo on, its ops inverted give `prevData`; every
`#sync` verifies; the records the replayed puts and deletes leave equal the truth file.
A cursor above the head is answered with one FutureCursor error frame, then close 1008.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict

import aiohttp
import pytest

from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.stream.client import subscribe
from skyfill.atproto.stream.commit import verify_commit, verify_sync
from skyfill.atproto.stream.exceptions import StreamClosed
from skyfill.atproto.stream.frames import (
    AccountFrame,
    CommitFrame,
    ErrorFrame,
    Frame,
    IdentityFrame,
    SyncFrame,
    decode_frame,
)
from skyfill.net.http import HttpSettings, make_session
from tests.helpers import Server, truth_records, xrpc_client

pytestmark = pytest.mark.refpds

QUIET_SECONDS = 2.0
"""A replay streams without pause; this long without a frame is its end."""


async def replay(session: aiohttp.ClientSession, pds: str, cursor: int) -> list[bytes]:
    """Every message from `cursor` until the stream is quiet."""
    messages: list[bytes] = []
    stream = aiter(subscribe(pds, cursor, session=session, allow_private_network=True))
    try:
        while True:
            messages.append(await asyncio.wait_for(anext(stream), QUIET_SECONDS))
    except TimeoutError:
        return messages
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def signing_keys(plc: str, dids: set[str]) -> dict[str, str | None]:
    async with xrpc_client() as (client, _limiter):
        resolver = IdentityResolver(client, plc)
        identities = await asyncio.gather(*(resolver.resolve(did) for did in dids))
    return {identity.did: identity.signing_key for identity in identities}


async def replay_hosts(hosts: list[str]) -> list[list[bytes]]:
    session = make_session(HttpSettings(allow_private_network=True))
    try:
        return [await replay(session, pds, 0) for pds in hosts]
    finally:
        await session.close()


@pytest.fixture(scope="module")
def replayed(refpds: Server) -> list[list[bytes]]:
    """Each PDS's messages from cursor 0 (read once for the module)."""
    return asyncio.run(replay_hosts(refpds.ready["pds"]))


async def test_replay_from_zero_verifies_and_rebuilds_the_truth(
    refpds: Server, replayed: list[list[bytes]]
) -> None:
    messages = [m for host in replayed for m in host]
    started = time.perf_counter()
    frames: list[Frame] = [decode_frame(m) for m in messages]
    decode_seconds = time.perf_counter() - started
    kinds = Counter(type(f).__name__ for f in frames)
    assert set(kinds) == {"CommitFrame", "SyncFrame", "IdentityFrame", "AccountFrame"}, kinds

    truth = refpds.ready["truth_data"]["repos"]
    dids = {f.repo if isinstance(f, CommitFrame) else f.did for f in frames}  # type: ignore[union-attr]
    assert dids <= set(truth)
    keys = await signing_keys(refpds.ready["plc"], dids)
    assert all(keys.values())

    records: dict[str, dict[str, str]] = defaultdict(dict)
    proofs: Counter[str] = Counter()
    started = time.perf_counter()
    for frame in frames:
        if isinstance(frame, CommitFrame):
            commit = verify_commit(frame, keys[frame.repo])
            proofs[commit.proof] += 1
            for put in commit.puts:
                records[frame.repo][f"{put.collection}/{put.rkey}"] = put.cid
            for delete in commit.deletes:
                del records[frame.repo][f"{delete.collection}/{delete.rkey}"]
        elif isinstance(frame, SyncFrame):
            rev, _cid = verify_sync(frame, keys[frame.did])
            assert rev == frame.rev
    verify_seconds = time.perf_counter() - started
    commits = kinds["CommitFrame"]
    print(
        f"\n{len(frames)} frames ({commits} commits): decode {len(frames) / decode_seconds:,.0f}"
        f" frames/s, verify {commits / verify_seconds:,.0f} commits/s; proofs {dict(proofs)}"
    )
    # a repo's first commit (createAccount's empty one) has no prevData; every other proves
    first_commits = {f.repo for f in frames if isinstance(f, CommitFrame) and f.since is None}
    assert proofs == {"no_prev_data": len(first_commits), "verified": commits - len(first_commits)}

    expected = truth_records(refpds.ready["truth_data"])
    ok = {did for did, repo in truth.items() if repo["status"] == "ok"}
    assert ok and ok <= dids
    for did in ok:
        assert set(records[did].items()) == expected[did], did
    for did in dids - ok:
        # a deactivated or taken down repo's commits stay in the log; a deleted one's leave it
        gone = truth[did]["status"] == "not_found"
        assert len(records[did]) == (0 if gone else truth[did]["records_before"]), did


def test_account_and_identity_frames_name_the_accounts(
    refpds: Server, replayed: list[list[bytes]]
) -> None:
    frames = [decode_frame(m) for host in replayed for m in host]
    assert all(isinstance(f, AccountFrame | IdentityFrame) for f in frames[:2])
    handles = {f.did: f.handle for f in frames if isinstance(f, IdentityFrame)}
    truth = refpds.ready["truth_data"]["repos"]
    assert handles and all(truth[did]["handle"] == handle for did, handle in handles.items())
    inactive = {f.did: f.status for f in frames if isinstance(f, AccountFrame) and not f.active}
    assert set(inactive.values()) <= {"deactivated", "takendown", "deleted"}
    for did, status in inactive.items():
        assert truth[did]["status"] == {"deleted": "not_found"}.get(status, status)


async def test_a_cursor_above_the_head_is_future_cursor(refpds: Server) -> None:
    session = make_session(HttpSettings(allow_private_network=True))
    try:
        stream = subscribe(
            refpds.ready["pds"][0], 10**9, session=session, allow_private_network=True
        )
        messages = []
        with pytest.raises(StreamClosed) as closed:
            async for message in stream:
                messages.append(message)
    finally:
        await session.close()
    assert [decode_frame(m) for m in messages] == [
        ErrorFrame("FutureCursor", "Cursor in the future.")
    ]
    assert closed.value.code == 1008

"""`Applier.apply_ready`, the consumer's path for a commit that needs nothing awaited: on a
recorded stream it gives exactly the changes `apply` gives, and it steps aside (None) for
every commit whose rules need more (an unknown identity, a key the decode stage did not
check with, a gap, a repo being re-fetched)."""

from __future__ import annotations

import dataclasses

from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.stream.frames import CommitFrame
from skyfill.atproto.xrpc import XrpcClient
from skyfill.firehose.apply import Applier
from skyfill.firehose.book import RepoBook
from skyfill.firehose.decoding import Decoded, decode_message
from skyfill.firehose.stats import StreamCounters
from skyfill.net.aiohttp_transport import AiohttpTransport
from skyfill.net.http import HttpSettings, make_session
from skyfill.ratelimit.local import side_limiter
from tests.firehose.recording import ServedRecording, read_frames
from tests.firehose.test_decode_workers import signing_keys


def _applier(client: XrpcClient, plc_url: str) -> Applier:
    return Applier(
        book=RepoBook({}, 1 << 30),
        resolver=IdentityResolver(client, plc_url),
        counters=StreamCounters(),
        verify=True,
        keep_did=lambda did: True,
        keep_collection=None,
        request_resync=lambda did: None,
    )


async def test_ready_commits_change_what_apply_changes(fh_served: ServedRecording) -> None:
    keys = signing_keys(fh_served.recording)
    events: list[Decoded] = [
        decode_message(f.message, keys, verify=True, keep_collection=None)
        for f in read_frames(fh_served.path)[:800]
    ]
    session = make_session(HttpSettings(allow_private_network=True))
    try:
        client = XrpcClient(AiohttpTransport(session, True), True, side_limiter(8))
        fast, reference = _applier(client, fh_served.plc_url), _applier(client, fh_served.plc_url)
        taken = commits = 0
        for frame, pre in events:
            if isinstance(frame, Exception) or not hasattr(frame, "seq"):
                continue
            commits += isinstance(frame, CommitFrame)
            ready = fast.apply_ready(frame, pre)
            taken += ready is not None
            got = ready if ready is not None else await fast.apply(frame, pre)
            assert got == await reference.apply(frame, pre)
        counts = [dataclasses.replace(a._counters, started=0) for a in (fast, reference)]
        assert counts[0] == counts[1]  # the same counts, by either path
        assert taken > commits * 0.6  # once an account is known, its commits are ready

        did = next(f.repo for f, _ in events if isinstance(f, CommitFrame))
        frame, pre = next(
            (f, p)
            for f, p in events[::-1]
            if isinstance(f, CommitFrame) and f.repo == did and p is not None
        )
        facts = fast._book.get(did)
        assert facts is not None and facts.rev is not None
        later = dataclasses.replace(frame, rev="3zzzzzzzzzzzy", since=facts.rev)
        # (a commit applied changes the book: the refusals first, each on the same book)
        assert fast.apply_ready(dataclasses.replace(later, since="3aaaaaaaaaaaa"), pre) is None
        assert fast.apply_ready(later, dataclasses.replace(pre, key=None)) is None
        assert fast.apply_ready(later, None) is None
        assert fast.apply_ready(dataclasses.replace(later, too_big=True), pre) is None
        assert fast.apply_ready(later, pre) is not None  # the next commit: ready
        assert fast._book.get(did).rev == later.rev  # type: ignore[union-attr]
        fast.desynchronize(did, "test")
        last = dataclasses.replace(frame, rev="3zzzzzzzzzzzz", since=later.rev)
        assert fast.apply_ready(last, pre) is None  # held while it is fetched again
    finally:
        await session.close()

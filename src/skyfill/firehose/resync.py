"""Fetching a desynchronized repo whole (getRepo), a few at a time, off the event path.

Each re-fetch resolves the DID afresh (the key or the PDS may have changed), downloads
the repo, verifies and decodes it exactly as a backfill does, and hands a `Snapshot` to
the consumer, which applies it in stream order. Transient failures are retried with
backoff; a repo that still cannot be read stays desynchronized and is tried again later
(and after a restart).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.identity.resolver import resolve_signing
from skyfill.atproto.retry import RetryPolicy, with_retries
from skyfill.atproto.xrpc import XrpcClient
from skyfill.backfill.decode import decode_to_table
from skyfill.errors import classify
from skyfill.firehose.apply import Snapshot

log = logging.getLogger(__name__)

RETRY_LATER_SECONDS = 30.0
"""A repo whose re-fetch failed transiently is tried again after this long."""


class Resyncer:
    def __init__(
        self,
        *,
        client: XrpcClient,
        resolver: IdentityResolver,
        stream_id: str,
        collections: list[str] | None,
        verify: bool,
        max_concurrent: int,
        max_repo_bytes: int,
        deliver: Callable[[Snapshot], Awaitable[None]],
        started: Callable[[str], None],
    ) -> None:
        self._client = client
        self._resolver = resolver
        self._stream_id = stream_id
        self._collections = collections
        self._verify = verify
        self._max_bytes = max_repo_bytes
        self._deliver = deliver
        self._started = started
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._retry = RetryPolicy(attempts=3, base_seconds=1.0, max_seconds=10.0)

    def request(self, did: str, delay: float = 0.0) -> None:
        """Fetch `did` whole (once: a request for a repo already being fetched is merged)."""
        if did in self._tasks:
            return
        self._tasks[did] = asyncio.create_task(self._run(did, delay), name=f"resync {did}")

    def retry_later(self, did: str) -> None:
        self._tasks.pop(did, None)
        self.request(did, RETRY_LATER_SECONDS)

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def drain(self) -> None:
        """Wait for every re-fetch that is running (not for those scheduled later)."""
        while True:
            running = [t for t in self._tasks.values() if not t.done()]
            if not running:
                return
            await asyncio.wait(running)

    async def close(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        self._tasks.clear()

    async def _run(self, did: str, delay: float) -> None:
        if delay:
            await asyncio.sleep(delay)
        async with self._slots:
            self._started(did)
            try:
                snap = await with_retries(
                    lambda: self._fetch(did), self._retry, f"re-fetch {did}", event="resync_retry"
                )
            except Exception as exc:  # every failure is this repo's outcome
                snap = Snapshot(did, error=classify(exc))
        self._tasks.pop(did, None)
        await self._deliver(snap)

    async def _fetch(self, did: str) -> Snapshot:
        if self._verify:
            identity = await resolve_signing(self._resolver, did, fresh=True)
        else:
            identity = await self._resolver.resolve(did, fresh=True)
        key = identity.signing_key
        car = await self._client.get_repo(identity.pds, did, self._max_bytes)
        decoded = await asyncio.to_thread(
            decode_to_table, car, did, self._stream_id, None, self._collections, key
        )
        log.info(
            "%s fetched again at rev %s (%d records)",
            did,
            decoded.rev,
            decoded.record_count,
            extra={"event": "resynced", "did": did},
        )
        return Snapshot(
            did,
            rev=decoded.rev,
            commit_cid=decoded.commit_cid,
            records=decoded.table.drop_columns(["job_id"]),
            identity=identity,
        )

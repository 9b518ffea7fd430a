"""DID -> Identity with a per-job cache; concurrent look-ups of one DID share one request.
A labeler's DID -> LabelerIdentity (its endpoint and label key), cached beside it."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from skyfill.atproto.did import validate_supported_did
from skyfill.atproto.exceptions import InvalidRepo, RepoFault
from skyfill.atproto.identity.base import DidMethodResolver, Identity, LabelerIdentity
from skyfill.atproto.identity.document import identity_from_document, labeler_from_document
from skyfill.atproto.identity.plc import DEFAULT_PLC_URL, PlcResolver
from skyfill.atproto.identity.web import WebResolver
from skyfill.atproto.xrpc import XrpcClient

T = TypeVar("T")
log = logging.getLogger(__name__)

CACHE_SIZE = 100_000
"""Identities kept (least recently used dropped): a job looks each DID up once or a few
times, so the cache serves retries and did:web hosts, not the whole input."""

LABELERS_CACHED = 1024
"""Labelers kept (the oldest dropped): a follower resolves the few it follows."""


class IdentityResolver:
    def __init__(
        self, client: XrpcClient, plc_url: str = DEFAULT_PLC_URL, cache_size: int = CACHE_SIZE
    ) -> None:
        self._cache_size = cache_size
        self._methods: dict[str, DidMethodResolver] = {
            "plc": PlcResolver(client, plc_url),
            "web": WebResolver(client),
        }
        self._cache: OrderedDict[str, Identity] = OrderedDict()
        self._inflight: dict[str, asyncio.Future[Identity]] = {}
        self._labelers: dict[str, LabelerIdentity] = {}

    def knows(self, did: str) -> bool:
        """Whether `did` is cached or being resolved (a look-up would not go out again)."""
        return did in self._cache or did in self._inflight

    def cached(self, did: str) -> Identity | None:
        """The identity of `did` if it is cached (no look-up; it counts as a use)."""
        identity = self._cache.get(did)
        if identity is not None:
            self._cache.move_to_end(did)
        return identity

    async def resolve(self, did: str, *, fresh: bool = False) -> Identity:
        """The identity of `did`. Only successes are cached, failures are raised each time.

        `fresh`: ask the directory again (a key may have rotated since it was cached)."""
        if fresh:
            self._cache.pop(did, None)
        elif did in self._cache:
            self._cache.move_to_end(did)
            return self._cache[did]
        if did in self._inflight:
            try:
                return await asyncio.shield(self._inflight[did])
            except asyncio.CancelledError:
                task = asyncio.current_task()
                if task is not None and task.cancelling():
                    raise
                # the look-up we joined was cancelled by the task that made it, not ours:
                # this one goes out on its own
                return await self.resolve(did, fresh=fresh)
        future: asyncio.Future[Identity] = asyncio.get_running_loop().create_future()
        self._inflight[did] = future
        try:
            identity = await self._resolve_uncached(did)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except Exception as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: having no other waiter is not an error
            raise
        finally:
            del self._inflight[did]
        self._cache[did] = identity
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        future.set_result(identity)
        return identity

    async def resolve_labeler(self, did: str, *, fresh: bool = False) -> LabelerIdentity:
        """The labeler `did`: its `#atproto_labeler` endpoint and `#atproto_label` key
        (a labeler's document needs no PDS). Labelers are few: each is cached until asked
        `fresh` (its key may have rotated)."""
        if not fresh and did in self._labelers:
            return self._labelers[did]
        labeler = labeler_from_document(did, await self._document(did))
        self._labelers.pop(did, None)
        self._labelers[did] = labeler
        if len(self._labelers) > LABELERS_CACHED:
            del self._labelers[next(iter(self._labelers))]
        return labeler

    async def _resolve_uncached(self, did: str) -> Identity:
        return identity_from_document(did, await self._document(did))

    async def _document(self, did: str) -> dict:
        validate_supported_did(did)
        return await self._methods[did.split(":", 2)[1]].fetch_document(did)


class Resolves(Protocol):
    """What the signing-key policy needs of a resolver."""

    async def resolve(self, did: str, *, fresh: bool = False) -> Identity: ...


async def resolve_signing(resolver: Resolves, did: str, *, fresh: bool = False) -> Identity:
    """The identity of `did` with its signing key: a document without one is asked
    for once more, bypassing the cache; InvalidRepo (`no_signing_key`) if it still
    has none."""
    identity = await resolver.resolve(did, fresh=fresh)
    if identity.signing_key is None and not fresh:
        identity = await resolver.resolve(did, fresh=True)
    if identity.signing_key is None:
        raise InvalidRepo(
            f"the DID document of {did} has no usable #atproto verification method",
            RepoFault.NO_SIGNING_KEY,
        )
    return identity


async def with_current_key(
    resolver: Resolves, identity: Identity, verify: Callable[[str], Awaitable[T]]
) -> tuple[Identity, T]:
    """`await verify(key)` with the identity's signing key; when it fails with
    `bad_signature`, once more with the key the directory gives now, if that one is
    another (keys rotate). Returns the identity whose key verified, and the result."""
    assert identity.signing_key is not None, "resolve_signing() first"
    try:
        return identity, await verify(identity.signing_key)
    except InvalidRepo as exc:
        if exc.kind is not RepoFault.BAD_SIGNATURE:
            raise
        fresh = await resolver.resolve(identity.did, fresh=True)
        if fresh.signing_key is None or fresh.signing_key == identity.signing_key:
            raise
    log.info("signing key of %s rotated", identity.did, extra={"event": "key_rotated"})
    return fresh, await verify(fresh.signing_key)

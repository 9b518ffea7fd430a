"""Repo discovery for backfill jobs: list every repo of the `--from-host` hosts, and of
the hosts of the `--from-relay` relays (backfill.relays).

Each host is listed with `com.atproto.sync.listRepos`, or with `listReposByCollection` when
`--collection` is given and the host offers it (elsewhere listRepos, and only that
collection's records are kept). The hosts are listed side by side. After each page, its
DIDs are handed to the job and then the host's cursor is saved, so a crash resumes the
listing at the saved cursor. Repos a host lists as inactive with a known status
(deactivated, takendown, suspended, deleted) are recorded with that status and never
fetched. DIDs already in the job, from the DID file or from another host, are skipped.
Every listing request is retried as a DID's fetch is (`--attempts`, `--backoff-max`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from skyfill.atproto.exceptions import NotSupported
from skyfill.atproto.listing import ListedRepo, list_repos, list_repos_by_collection
from skyfill.atproto.retry import RetryPolicy
from skyfill.atproto.xrpc import XrpcClient
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.relays import RelayDiscovery
from skyfill.engine.discovery import DiscoveryContext
from skyfill.engine.model import ItemResult
from skyfill.errors import Outcome
from skyfill.failpoints import failpoint

log = logging.getLogger(__name__)

INACTIVE_STATUSES = {
    "deactivated": Outcome.DEACTIVATED,
    "takendown": Outcome.TAKENDOWN,
    "suspended": Outcome.SUSPENDED,
    "deleted": Outcome.DELETED,
}
"""listRepos statuses that are final for a backfill, as repo statuses. Others
(desynchronized, throttled, unknown) are fetched: getRepo then says what the repo is."""


class HostDiscovery:
    def __init__(self, config: BackfillConfig, client: XrpcClient) -> None:
        self.config = config
        self.client = client
        self.retry = RetryPolicy(
            attempts=config.attempts,
            base_seconds=config.retry_base_seconds,
            max_seconds=config.backoff_max,
        )

    async def run(self, ctx: DiscoveryContext) -> None:
        relays = RelayDiscovery(self.config, self.client, self.retry, self.list_host)
        await asyncio.gather(
            *(self.list_host(ctx, host) for host in self.config.from_hosts),
            relays.run(ctx),
        )

    async def list_host(self, ctx: DiscoveryContext, host: str) -> None:
        """List one host's repos, from its saved position on (nothing if it is done)."""
        state = ctx.position().get(host, {})
        if state.get("done"):
            return
        method = state.get("method") or ("by_collection" if self.config.collection else "all")
        if method == "by_collection":
            try:
                await self._list_by_collection(ctx, host, state.get("cursor"))
                return
            except NotSupported as exc:
                log.info("%s: %s; listing every repo instead", host, exc)
                await _save(ctx, host, method="all", cursor=None)
        await self._list_all(ctx, host, state.get("cursor") if method == "all" else None)

    async def _list_all(self, ctx: DiscoveryContext, host: str, cursor: str | None) -> None:
        listing = list_repos(
            self.client, host, cursor=cursor, limit=self.config.list_limit, retry=self.retry
        )
        async for repos, next_cursor in listing:
            settled = [_inactive(r, host) for r in repos if _is_settled(r)]
            added = await ctx.add([r.did for r in repos], settled, lane=host)
            await _save(
                ctx,
                host,
                method="all",
                cursor=next_cursor,
                listed=len(repos),
                added=added,
                done=next_cursor is None,  # the last page: never listed again after a crash
            )
            failpoint("discovery_page_saved")
        await _save(ctx, host, method="all", done=True, skipped=listing.skipped)

    async def _list_by_collection(
        self, ctx: DiscoveryContext, host: str, cursor: str | None
    ) -> None:
        assert self.config.collection is not None
        listing = list_repos_by_collection(
            self.client, host, self.config.collection, cursor=cursor, retry=self.retry
        )
        async for dids, next_cursor in listing:
            added = await ctx.add(dids, lane=host)
            await _save(
                ctx,
                host,
                method="by_collection",
                cursor=next_cursor,
                listed=len(dids),
                added=added,
                done=next_cursor is None,
            )
        await _save(ctx, host, method="by_collection", done=True, skipped=listing.skipped)


def _is_settled(repo: ListedRepo) -> bool:
    return not repo.active and repo.status in INACTIVE_STATUSES


def _inactive(repo: ListedRepo, host: str) -> ItemResult:
    status = INACTIVE_STATUSES[repo.status or ""]
    return ItemResult(
        repo.did,
        status,
        error_class=status,
        error=f"listRepos on {host}: {repo.did} is {repo.status}",
        data={"pds": host, "fetched_at": time.time()},
    )


async def _save(ctx: DiscoveryContext, host: str, **facts: Any) -> None:
    """Update one host's entry of the saved position (counts add up); hosts listed side by
    side update it one at a time."""

    def change(position: dict[str, Any]) -> None:
        entry = dict(position.get(host, {}))
        for name in ("listed", "added", "skipped"):
            if name in facts:
                facts[name] += entry.get(name, 0)
        entry.update(facts)
        position[host] = entry

    await ctx.update(change)

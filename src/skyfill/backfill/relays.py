"""Discovering a whole network from relays (`--from-relay`): their hosts, then each host's
repos, listed on the host itself.

A relay's own listRepos misses repos, so a relay is asked only for its hosts
(`com.atproto.sync.listHosts`); each usable host is then listed like a `--from-host` (its
own listRepos, a cursor per host, the same per-host rate limits). Hosts the relay reports
`offline` or `banned` are recorded with that status and a log line, and never listed
(`idle`, `throttled`, unknown or no status: listed; a throttled host's rate is the
limiter's business). A host whose listing fails (after the job's retry policy) is
recorded as failed and the others go on; a relay that cannot be listed fails the
discovery (and so the job, which `skyfill resume` continues).

Where each fact is kept, in the discovery position (`DiscoveryContext.position()`):

    position["relays"][relay_url] = {"cursor", "done", "hosts", "skipped"}
    position[host_url] = {"via": relay_url, "hostname", "host_status", "account_count",
                          # then as a --from-host entry: "method", "cursor", "listed",
                          # "added", "done"; or "not_listed": status (done);
                          # or "failed": "<error class>: <message>" (not done)}

A listHosts page's hosts are recorded together with the relay's next cursor, in one
update: after a crash, the relay's listing resumes at its cursor and every host recorded
and not done is listed (again from its own cursor). Failed hosts are tried once more when
an unfinished discovery resumes; once the discovery is done, never again.

hostname -> URL: `https://<hostname>`; `http://<hostname>` only when the relay's own URL
is http:// and private networks are allowed (`--allow-private-network`: test networks on
loopback). A host also given as `--from-host` is listed there, whatever the relay says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any, TypeVar

from skyfill.atproto.listing import ListedHost, list_hosts
from skyfill.atproto.retry import RetryPolicy
from skyfill.atproto.xrpc import XrpcClient
from skyfill.backfill.config import BackfillConfig
from skyfill.engine.discovery import DiscoveryContext
from skyfill.errors import SkyfillError
from skyfill.failpoints import failpoint

log = logging.getLogger(__name__)
T = TypeVar("T")

RELAYS = "relays"
"""The position's key holding each relay's own listing (host entries are keyed by URL)."""
NOT_LISTED_STATUSES = ("offline", "banned")
"""Host statuses whose hosts are reported, never listed."""
LISTINGS_AT_ONCE = 16
"""Hosts of the relays listed side by side (each one page after another)."""

ListHost = Callable[[DiscoveryContext, str], Awaitable[None]]
"""Lists one host's repos from its saved entry on (HostDiscovery's per-host listing)."""


def host_url(hostname: str, relay_url: str, allow_private_network: bool) -> str:
    """The URL of a host a relay names by its bare hostname."""
    plain = relay_url.startswith("http://") and allow_private_network
    return f"{'http' if plain else 'https'}://{hostname}"


class RelayDiscovery:
    """Lists the hosts of `config.from_relays`, then each usable host with `list_host`."""

    def __init__(
        self,
        config: BackfillConfig,
        client: XrpcClient,
        retry: RetryPolicy,
        list_host: ListHost,
    ) -> None:
        self.config = config
        self.client = client
        self.retry = retry
        self.list_host = list_host

    async def run(self, ctx: DiscoveryContext) -> None:
        if not self.config.from_relays:
            return
        for relay in self.config.from_relays:  # a few requests each: one after another
            await self._list_relay(ctx, relay)
        queue = asyncio.Queue[tuple[str, bool]]()
        position = await asyncio.to_thread(ctx.position)
        pending = [
            (url, entry)
            for url, entry in position.items()
            if isinstance(entry, dict) and entry.get("via") and not entry.get("done")
        ]
        for url, entry in listing_order(pending, lambda pair: pair[1].get("account_count")):
            queue.put_nowait((url, "failed" in entry))
        workers = min(LISTINGS_AT_ONCE, queue.qsize())
        await asyncio.gather(*(self._list_hosts(ctx, queue) for _ in range(workers)))

    async def _list_relay(self, ctx: DiscoveryContext, relay: str) -> None:
        position = await asyncio.to_thread(ctx.position)
        state = position.get(RELAYS, {}).get(relay, {})
        if state.get("done"):
            return
        listing = list_hosts(
            self.client,
            relay,
            cursor=state.get("cursor"),
            limit=self.config.list_limit,
            retry=self.retry,
        )
        given = {url.rstrip("/") for url in self.config.from_hosts}  # listed there
        async for hosts, next_cursor in listing:
            urls = {self._url(relay, h): h for h in hosts}
            entries = {url: _entry(relay, h) for url, h in urls.items() if url not in given}
            page = partial(
                _record_page, relay=relay, entries=entries, listed=len(hosts), cursor=next_cursor
            )
            for url in await _update(ctx, page):
                _log_not_listed(relay, url, entries[url])
            failpoint("relay_page_saved")
        await ctx.update(lambda p: _relay_done(p, relay, listing.skipped))

    def _url(self, relay: str, host: ListedHost) -> str:
        return host_url(host.hostname, relay, self.config.allow_private_network)

    async def _list_hosts(
        self, ctx: DiscoveryContext, queue: asyncio.Queue[tuple[str, bool]]
    ) -> None:
        while not queue.empty():
            url, failed_before = queue.get_nowait()
            try:
                if failed_before:  # an unfinished discovery resumed: one more try
                    await ctx.update(partial(_forget_failure, url=url))
                await self.list_host(ctx, url)
            except SkyfillError as exc:
                failed = f"{exc.error_class}: {exc.message}"
                log.warning(
                    "%s: listing its repos failed, they are left out: %s",
                    url,
                    failed,
                    extra={"event": "host_listing_failed", "host": url},
                )
                await ctx.update(partial(_mark_failed, url=url, failed=failed))


def listing_order(hosts: list[T], accounts: Callable[[T], int | None]) -> list[T]:
    """The hosts with the most accounts (as the relay counts them) first, the others in
    the relay's order: a host with millions of repos is the job's long pole, so its repos
    must be fetched from the start (its listing, paced by its own limit, goes on beside
    its fetches), not after thousands of small hosts were listed."""
    return sorted(hosts, key=lambda host: -(accounts(host) or 0))


def _entry(relay: str, host: ListedHost) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "via": relay,
        "hostname": host.hostname,
        "host_status": host.status,
        "account_count": host.account_count,
    }
    if host.status in NOT_LISTED_STATUSES:
        entry.update(not_listed=host.status, done=True)
    return entry


async def _update(ctx: DiscoveryContext, change: Callable[[dict[str, Any]], T]) -> T:
    """`ctx.update(change)`, returning what `change` returned."""
    result: list[T] = []
    await ctx.update(lambda position: result.append(change(position)))
    return result[0]


def _record_page(
    position: dict[str, Any],
    *,
    relay: str,
    entries: dict[str, dict[str, Any]],
    listed: int,
    cursor: str | None,
) -> list[str]:
    """Record a listHosts page's hosts that were not known yet, and the relay's cursor
    (None: that was its last page); returns the URLs of the new hosts that are not listed."""
    relays = dict(position.get(RELAYS, {}))
    state = dict(relays.get(relay, {}))
    new = {url: entry for url, entry in entries.items() if url not in position}
    position.update(new)
    state.update(cursor=cursor, hosts=state.get("hosts", 0) + listed, done=cursor is None)
    relays[relay] = state
    position[RELAYS] = relays
    return [url for url, entry in new.items() if entry.get("not_listed")]


def _relay_done(position: dict[str, Any], relay: str, skipped: int) -> None:
    relays = dict(position.get(RELAYS, {}))
    state = dict(relays.get(relay, {}))
    state.update(done=True, cursor=None, skipped=state.get("skipped", 0) + skipped)
    relays[relay] = state
    position[RELAYS] = relays


def _forget_failure(position: dict[str, Any], *, url: str) -> None:
    entry = dict(position.get(url, {}))
    entry.pop("failed", None)
    position[url] = entry


def _mark_failed(position: dict[str, Any], *, url: str, failed: str) -> None:
    position[url] = {**position.get(url, {}), "failed": failed}


def _log_not_listed(relay: str, url: str, entry: dict[str, Any]) -> None:
    log.info(
        "%s: %s is %s there; its repos are not listed",
        relay,
        url,
        entry["not_listed"],
        extra={"event": "host_not_listed", "host": url, "host_status": entry["not_listed"]},
    )

"""A host budget shared through Redis: a sliding-window log per host, in one Lua script.

The key `skyfill:ratelimit:<host>` is a sorted set of the request slots handed out in
the last window (plus a slot's lifetime), scored by the Redis server's clock (`TIME`, so
the workers' clocks do not matter). The script drops older slots, grants up to the number
asked within the limit, and otherwise says when the oldest slot leaves the window. Each
slot is a member named by its lease (`<worker tag>:<lease>:<i>`), so that a worker can give
back the slots it never spent (`ZREM`). Keys are shared by every job on the server: two
jobs on the same host share its budget.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import secrets
from collections.abc import Callable, Sequence

import redis

from skyfill.ratelimit.shared import REFUSED_RETRY, Grant, lease_lifetime
from skyfill.ratelimit.spec import RateSpec

_LEASE = """
local key = KEYS[1]
local window_us = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
local want = tonumber(ARGV[3])
local tag = ARGV[4]
local lifetime_us = tonumber(ARGV[5])
local retry_us = tonumber(ARGV[6])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window_us)
local used = redis.call('ZCARD', key)
local grant = math.min(want, limit - used)
if grant <= 0 then
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  local wait = window_us
  if oldest[2] then wait = tonumber(oldest[2]) + window_us - now end
  if redis.call('ZCOUNT', key, now - lifetime_us, '+inf') > 0 then
    wait = math.min(wait, retry_us)  -- a recent slot may be given back unused
  end
  return {0, wait}
end
for i = 1, grant do
  redis.call('ZADD', key, now, tag .. ':' .. i)
end
redis.call('PEXPIRE', key, math.ceil(window_us / 1000) + 1000)
return {grant, 0}
"""


def budget_key(host: str) -> str:
    return f"skyfill:ratelimit:{host}"


class RedisBudget:
    def __init__(self, client: redis.Redis, url: str | None = None) -> None:
        self._r = client
        self._url = url
        """Where the client connects (None: unknown; no other process can open it)."""
        self._script = client.register_script(_LEASE)
        self._tag = secrets.token_hex(4)
        self._leases = itertools.count()

    async def lease(self, host: str, spec: RateSpec, want: int) -> Grant:
        return await asyncio.to_thread(self.lease_now, host, spec, want)

    def lease_now(self, host: str, spec: RateSpec, want: int) -> Grant:
        # A slot may be spent up to its lifetime after the lease: counting it over the window
        # plus that lifetime keeps any real window of requests within the limit.
        lifetime = lease_lifetime(spec)
        tag = f"{self._tag}:{next(self._leases)}"
        granted, wait_us = self._script(
            keys=[budget_key(host)],
            args=[
                int((spec.window + lifetime) * 1_000_000),
                spec.requests,
                want,
                tag,
                int(lifetime * 1_000_000),
                int(REFUSED_RETRY * 1_000_000),
            ],
        )
        if int(granted) <= 0:
            return Grant(wait=max(0.0, int(wait_us) / 1_000_000))
        return Grant(tuple(f"{tag}:{i}" for i in range(1, int(granted) + 1)))

    @classmethod
    def from_url(cls, url: str) -> RedisBudget:
        return cls(redis.Redis.from_url(url), url)

    def opener(self) -> Callable[[], RedisBudget] | None:
        return None if self._url is None else functools.partial(RedisBudget.from_url, self._url)

    async def give_back(self, host: str, slots: Sequence[str]) -> None:
        if slots:
            await asyncio.to_thread(self._r.zrem, budget_key(host), *slots)

"""Leases in Redis: at most one holder of a named role at a time, renewed while it works.

A lease is a key holding its owner's id with a time to live. Whoever sets it first holds
it; the holder renews it in the background; a holder that dies stops renewing, the key
expires and another node takes over. Renewal and release check the owner in a Lua script,
so a node never extends or drops a lease that has meanwhile passed to another.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import redis

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class LeaseLost(RuntimeError):
    """The lease expired before its holder renewed it (another node may hold it now)."""


class RedisLease:
    def __init__(self, client: redis.Redis, key: str, owner: str, ttl: float = 30.0) -> None:
        self._r = client
        self.key = key
        self.owner = owner
        self.ttl_ms = int(ttl * 1000)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def try_acquire(self) -> bool:
        return bool(self._r.set(self.key, self.owner, nx=True, px=self.ttl_ms))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.owner, self.ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.owner])

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[bool]:
        """Yield whether the lease was acquired; while held, renew it every third of its
        time to live, and release it at the end."""
        if not self.try_acquire():
            yield False
            return
        keeper = asyncio.ensure_future(self._keep())
        try:
            yield True
        finally:
            keeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await keeper
            self.release()

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(self.ttl_ms / 3000)
            if not await asyncio.to_thread(self.renew):
                raise LeaseLost(self.key)

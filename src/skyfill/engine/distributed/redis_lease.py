"""Leases in Redis: a key holding its owner's id with a time to live.

Whoever sets the key first (`SET NX PX`) holds the lease. Renewal and release check the
owner in a Lua script, so a node never extends or drops a lease that has meanwhile
passed to another.
"""

from __future__ import annotations

import redis

from skyfill.engine.state.redis_keys import RedisKeys

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


class RedisLease:
    def __init__(self, client: redis.Redis, key: str, owner: str, ttl: float = 30.0) -> None:
        self._r = client
        self.key = key
        self.owner = owner
        self.ttl = ttl
        self._ttl_ms = max(1, int(ttl * 1000))
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)

    def try_acquire(self) -> bool:
        return bool(self._r.set(self.key, self.owner, nx=True, px=self._ttl_ms))

    def renew(self) -> bool:
        return bool(self._renew(keys=[self.key], args=[self.owner, self._ttl_ms]))

    def release(self) -> None:
        self._release(keys=[self.key], args=[self.owner])


class RedisLeases:
    """The leases of one job (`P lock:<name>` keys)."""

    def __init__(self, client: redis.Redis, keys: RedisKeys) -> None:
        self._r = client
        self._keys = keys

    def __call__(self, name: str, owner: str, ttl: float) -> RedisLease:
        return RedisLease(self._r, self._keys.lock(name), owner, ttl)

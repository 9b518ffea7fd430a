"""The Redis streams of the live topology (`skyfill ingest` -> `skyfill index`): their
names, how a DID picks its partition, and the checks both sides make at start.

Under `skyfill:live:<name>:` —
- `events:<i>`: the stream's events whose DID falls in partition i (fields seq, did,
  data = the websocket message as the host sent it), in seq order: one repo's events stay
  in one partition, in order;
- `backfill:<i>`: repos to snapshot (field did), partitioned the same way, so that the
  worker holding a repo's events also fetches it;
- `cursor` (source -> the last seq written), `listing` (source -> listRepos cursor),
  `queued` (DIDs already put in a backfill stream), `meta` (partitions, sources);
- `labels:<n>`: a labeler's `subscribeLabels` messages (fields seq, data), one stream per
  labeler (`labelers`: URL -> n; `label-cursor`: URL -> the last seq written);
- `lease:<i>`, `lease:labels:<n>`, `workers`, `state:<i>:*`, `labelstate:<n>:*`: the index
  workers' side (`index.py`, `redis_state.py`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

import redis

from skyfill.errors import UsageError
from skyfill.urls import redact_url

GROUP = "index"
"""The consumer group every index worker reads with."""


@dataclass(frozen=True, slots=True)
class LiveKeys:
    name: str

    @property
    def prefix(self) -> str:
        return f"skyfill:live:{self.name}"

    def events(self, partition: int) -> str:
        return f"{self.prefix}:events:{partition}"

    def backfill(self, partition: int) -> str:
        return f"{self.prefix}:backfill:{partition}"

    def lease(self, partition: int) -> str:
        return f"{self.prefix}:lease:{partition}"

    def state(self, partition: int) -> str:
        return f"{self.prefix}:state:{partition}"

    def labels(self, labeler: int) -> str:
        return f"{self.prefix}:labels:{labeler}"

    def labels_lease(self, labeler: int) -> str:
        return f"{self.prefix}:lease:labels:{labeler}"

    def labels_state(self, labeler: int) -> str:
        return f"{self.prefix}:labelstate:{labeler}"

    @property
    def labelers(self) -> str:
        """labeler URL -> the number of its stream (`labels:<n>`)."""
        return f"{self.prefix}:labelers"

    @property
    def label_cursor(self) -> str:
        """labeler URL -> the last seq written to its stream."""
        return f"{self.prefix}:label-cursor"

    @property
    def cursor(self) -> str:
        return f"{self.prefix}:cursor"

    @property
    def listing(self) -> str:
        return f"{self.prefix}:listing"

    @property
    def queued(self) -> str:
        return f"{self.prefix}:queued"

    @property
    def meta(self) -> str:
        return f"{self.prefix}:meta"

    @property
    def workers(self) -> str:
        return f"{self.prefix}:workers"


def partition_of(did: str, partitions: int) -> int:
    return zlib.crc32(did.encode()) % partitions


def connect_checked(url: str) -> redis.Redis:
    """A client (bytes in and out) of a Redis that persists its writes (AOF); one line
    and a non-zero exit otherwise: a stream in a Redis that forgets it on a restart would
    lose events after their cursor moved on."""
    client = redis.Redis.from_url(url, socket_connect_timeout=5)
    try:
        info = client.info("persistence")
    except redis.RedisError as exc:
        raise UsageError(f"--state: Redis at {_shown(url)} is not reachable: {exc}") from None
    if int(info.get("aof_enabled", 0)) != 1:
        raise UsageError(
            f"--state: Redis at {_shown(url)} does not keep an append-only file "
            "(appendonly no): the streams and cursors would be lost on a restart; "
            "start it with --appendonly yes (or CONFIG SET appendonly yes)"
        )
    return client


def stored_partitions(client: redis.Redis, keys: LiveKeys, wanted: int | None) -> int:
    """The partition count of these streams: set by the first ingester, the same after."""
    if wanted is not None:
        client.hsetnx(keys.meta, "partitions", wanted)
    raw = client.hget(keys.meta, "partitions")
    if raw is None:
        raise UsageError(
            f"no live streams named {keys.name!r} in this Redis yet: start `skyfill ingest` first"
        )
    partitions = int(raw)
    if wanted is not None and wanted != partitions:
        raise UsageError(
            f"the live streams {keys.name!r} have {partitions} partitions, not {wanted}: "
            "keep --partitions as it was (or use another --name)"
        )
    return partitions


def labeler_number(client: redis.Redis, keys: LiveKeys, url: str) -> int:
    """The number of a labeler's stream, given once (the first ingester to see it)."""
    raw = client.hget(keys.labelers, url)
    if raw is None:  # a number nobody else can take, kept only if the URL has none yet
        client.hsetnx(keys.labelers, url, int(client.incr(f"{keys.labelers}:next")) - 1)
        raw = client.hget(keys.labelers, url)
    assert raw is not None
    return int(raw)


def _shown(url: str) -> str:
    return redact_url(url)

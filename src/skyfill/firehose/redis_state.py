"""A stream's state in Redis: one partition of `skyfill index`, which any index worker
may take over, so its cursor and per-repo facts cannot live in a worker's own file.

Keys (under the live streams' prefix, see `live_keys.LiveKeys`): `state:<i>:cursor` (a
hash: source -> "seq|event time"), `state:<i>:repos` (did -> the facts as JSON) and
`state:<i>:meta`. A save writes all three in one MULTI/EXEC, together with the XACK of
the stream entries it covers (`acks`), so an entry is acknowledged exactly when what it
carried is saved; the sink's own transaction (rows + cursor) comes first, as for
`StreamState`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

import orjson
import redis

from skyfill.firehose.state import RepoFacts

Acks = Callable[[int, set[str]], list[tuple[bytes | str, list[bytes]]]]
"""Given the saved seq and the DIDs whose facts the save writes: the (stream key, entry
ids) the save lets the worker acknowledge."""


class RedisStreamState:
    def __init__(self, client: redis.Redis, key: str, group: str, acks: Acks | None = None) -> None:
        self._client = client
        self._key = key
        self._group = group
        self._acks = acks

    def close(self) -> None:
        pass  # the client is the worker's

    def cursor(self, source: str) -> tuple[int, str | None] | None:
        raw = self._client.hget(f"{self._key}:cursor", source)
        if raw is None:
            return None
        seq, _, when = _text(raw).partition("|")
        return int(seq), when or None

    def load_repos(self) -> dict[str, RepoFacts]:
        rows = self._client.hgetall(f"{self._key}:repos")
        return {_text(did): RepoFacts(*orjson.loads(data)) for did, data in rows.items()}

    def save(
        self,
        source: str,
        seq: int,
        event_time: str | None,
        repos: Iterable[tuple[str, RepoFacts]],
        stats: dict | None = None,
    ) -> None:
        facts: dict[Any, Any] = {}
        for did, f in repos:
            facts[did] = orjson.dumps([f.rev, f.status, f.phase, f.reason, f.seq])
        acks = self._acks(seq, set(facts)) if self._acks is not None else []
        pipe = self._client.pipeline(transaction=True)
        if facts:
            pipe.hset(f"{self._key}:repos", mapping=facts)
        pipe.hset(f"{self._key}:cursor", source, f"{seq}|{event_time or ''}")
        if stats is not None:
            data = orjson.dumps({**stats, "updated_at": time.time()})
            pipe.hset(f"{self._key}:meta", "stats", data)
        for stream, ids in acks:
            if ids:
                pipe.xack(stream, self._group, *ids)
        pipe.execute()

    def reset_cursor(self, source: str) -> None:
        self._client.hdel(f"{self._key}:cursor", source)

    def put_meta(self, name: str, data: object) -> None:
        self._client.hset(f"{self._key}:meta", name, orjson.dumps(data))

    def meta(self, name: str) -> object | None:
        raw = self._client.hget(f"{self._key}:meta", name)
        return None if raw is None else orjson.loads(raw)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class RedisLabelState:
    """A labeler's state for `skyfill index` (`labels.state.LabelStateStore`): its cursor,
    the DID its labels are signed by and the counters, under `key`; a save acknowledges
    the label entries it covers in the same MULTI/EXEC."""

    def __init__(self, client: redis.Redis, key: str, group: str, acks: Acks | None = None) -> None:
        self._client = client
        self._key = key
        self._group = group
        self._acks = acks

    def close(self) -> None:
        pass

    def cursors(self) -> dict[str, int]:
        rows: Any = self._client.hgetall(f"{self._key}:cursor")
        return {_text(labeler): int(seq) for labeler, seq in rows.items()}

    def save(self, labeler: str, seq: int) -> None:
        pipe = self._client.pipeline(transaction=True)
        pipe.hset(f"{self._key}:cursor", labeler, seq)
        for stream, ids in self._acks(seq, set()) if self._acks is not None else []:
            if ids:
                pipe.xack(stream, self._group, *ids)
        pipe.execute()

    def did(self, labeler: str) -> str | None:
        raw = self._client.hget(f"{self._key}:did", labeler)
        return None if raw is None else _text(raw)

    def pin(self, labeler: str, did: str) -> None:
        self._client.hset(f"{self._key}:did", labeler, did)

    def put_meta(self, name: str, data: object) -> None:
        self._client.hset(f"{self._key}:meta", name, orjson.dumps(data))

    def meta(self, name: str) -> object | None:
        raw = self._client.hget(f"{self._key}:meta", name)
        return None if raw is None else orjson.loads(raw)

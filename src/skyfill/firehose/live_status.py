"""What `skyfill live-status` shows of the live topology in Redis: each source's cursor,
each partition's stream (entries kept, not yet acknowledged, not yet delivered), who holds
it and where its state's cursor is, and the index workers alive."""

from __future__ import annotations

import time
from typing import Any

import redis

from skyfill.firehose.live_keys import GROUP, LiveKeys, stored_partitions


def live_status(client: redis.Redis, name: str) -> dict[str, Any]:
    keys = LiveKeys(name)
    partitions = stored_partitions(client, keys, None)
    cursors: Any = client.hgetall(keys.cursor)
    workers: Any = client.zrange(keys.workers, 0, -1, withscores=True)
    now = time.time()
    return {
        "name": name,
        "partitions": [_partition(client, keys, i) for i in range(partitions)],
        "sources": {_text(k): int(v) for k, v in cursors.items()},
        "workers": {_text(w): round(now - score, 1) for w, score in workers},
        "repos_queued": int(client.scard(keys.queued)),
    }


def _partition(client: redis.Redis, keys: LiveKeys, index: int) -> dict[str, Any]:
    holder = client.get(keys.lease(index))
    state: Any = client.hgetall(f"{keys.state(index)}:cursor")
    facts = {"partition": index, "holder": None if holder is None else _text(holder)}
    for kind, stream in (("events", keys.events(index)), ("backfill", keys.backfill(index))):
        facts[kind] = _stream(client, stream)
    facts["cursor"] = next((int(_text(v).split("|")[0]) for v in state.values()), None)
    return facts


def _stream(client: redis.Redis, stream: str) -> dict[str, Any]:
    kept = int(client.xlen(stream))
    try:
        groups: Any = client.xinfo_groups(stream)
    except redis.ResponseError:
        groups = []
    group = next((g for g in groups if _text(g["name"]) == GROUP), None)
    if group is None:
        return {"kept": kept, "pending": 0, "lag": kept}
    return {"kept": kept, "pending": int(group["pending"]), "lag": group.get("lag")}


def render_live_status(facts: dict[str, Any]) -> str:
    lines = [f"live streams {facts['name']}: {facts['repos_queued']} repos queued for a snapshot"]
    for source, seq in sorted(facts["sources"].items()):
        lines.append(f"  source {source}: written through seq {seq}")
    for worker, age in sorted(facts["workers"].items()):
        lines.append(f"  worker {worker}: heartbeat {age} s ago")
    for part in facts["partitions"]:
        events, backfill = part["events"], part["backfill"]
        lines.append(
            f"  partition {part['partition']}: held by {part['holder'] or 'nobody'}, "
            f"cursor {part['cursor']}; events kept {events['kept']}, pending "
            f"{events['pending']}, not delivered {events['lag']}; snapshots to do "
            f"{backfill['lag']} (+{backfill['pending']} in progress)"
        )
    return "\n".join(lines)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value

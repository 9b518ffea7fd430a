"""A Kafka-protocol broker for tests (`$SKYFILL_SHARED/kafka/start.sh`: Tansu, memory only,
on a free 127.0.0.1 port; stopped with its stop.sh, by the PID it wrote), and reading a
topic back: every message, and the topic folded by key as log compaction would keep it.

Tansu refuses idempotent producers, so the tests' sink URLs say `idempotence=false`; and
its end offsets are not message counts, so a read ends at a marker: one message the
reader itself sends to each partition just before reading (keyed `MARKER`, a fresh value
each time), read back in every partition. Markers are left out of what a read returns.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
MARKER = b"__skyfill_test_end__"
READ_TIMEOUT = 30.0
_topics = itertools.count()


def shared_dir() -> Path:
    return Path(os.environ.get("SKYFILL_SHARED", REPO_ROOT.parent / "shared")).resolve()


class KafkaUnavailable(RuntimeError):
    """The broker could not be started (the message says why)."""


@dataclass
class KafkaBroker:
    data: Path
    bootstrap: str

    @classmethod
    def start(cls, data: Path, port: int) -> KafkaBroker:
        script = shared_dir() / "kafka" / "start.sh"
        if not script.exists():
            raise KafkaUnavailable(f"no {script}: set SKYFILL_SHARED to the shared directory")
        done = subprocess.run(
            ["bash", str(script), str(data), str(port)],
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        if done.returncode != 0:
            raise KafkaUnavailable(f"{script} failed: {done.stderr.strip()[-2000:]}")
        ready = json.loads(done.stdout.strip().splitlines()[-1])
        return cls(data, ready["bootstrap"])

    def stop(self) -> None:
        script = shared_dir() / "kafka" / "stop.sh"
        subprocess.run(["bash", str(script), str(self.data)], timeout=60, check=False)

    def topic(self, prefix: str) -> str:
        """A topic name no other test of the session uses."""
        return f"{prefix}-{next(_topics)}"

    def url(self, topic: str, **options: Any) -> str:
        """A sink URL for `topic` on this broker (idempotence off: Tansu refuses it)."""
        query = {"idempotence": "false", "partitions": 3, **options}
        return f"kafka://{self.bootstrap}/{topic}?" + "&".join(f"{k}={v}" for k, v in query.items())


@dataclass(frozen=True)
class Received:
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: dict[str, str]

    def json(self) -> Any:
        return None if self.value is None else json.loads(self.value)


def read_topic(bootstrap: str, topic: str) -> list[Received]:
    """Every message of the topic (each partition in offset order, partitions one after
    the other), up to a marker sent now."""
    return asyncio.run(_read(bootstrap, topic))


async def _read(bootstrap: str, topic: str) -> list[Received]:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        partitions = sorted(await producer.partitions_for(topic))
        mark = uuid.uuid4().hex.encode()
        for partition in partitions:
            await producer.send_and_wait(topic, mark, key=MARKER, partition=partition)
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=50
    )
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: dict[int, list[Received]] = {p: [] for p in partitions}
        open_partitions = set(partitions)
        async with asyncio.timeout(READ_TIMEOUT):
            while open_partitions:
                batches = await consumer.getmany(timeout_ms=200)
                for tp, messages in batches.items():
                    for m in messages:
                        if m.key == MARKER:
                            if m.value == mark:
                                open_partitions.discard(tp.partition)
                            continue
                        headers = {k: v.decode() for k, v in m.headers}
                        got[tp.partition].append(
                            Received(tp.partition, m.offset, m.key, m.value, headers)
                        )
        return [m for p in partitions for m in got[p]]
    finally:
        await consumer.stop()


def fold(messages: list[Received]) -> dict[bytes, Received]:
    """The topic as log compaction keeps it: each key's last message; a tombstone removes
    its key. (A key's messages are all in one partition, in order.)"""
    out: dict[bytes, Received] = {}
    for m in messages:
        assert m.key is not None, m
        if m.value is None:
            out.pop(m.key, None)
        else:
            out[m.key] = m
    return out

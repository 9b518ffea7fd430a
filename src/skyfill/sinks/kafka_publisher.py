"""One Kafka producer for a sink, driven from ordinary (non-async) code.

The sinks are called from threads (`Sink.write` by the aggregator, `StreamSink.apply` by
the stream's writer); aiokafka is asyncio. A `Publisher` owns an event loop in a thread of
its own, where its producer lives; `publish` hands it messages and `flush` returns once
the broker has acknowledged every message sent so far (`acks=all`), or raises
`SinkWriteError` naming the first failure. Nothing is acknowledged to the caller before
the broker acknowledged it: that is the sinks' delivery guarantee.

Ordering: aiokafka sends one batch per partition at a time and retries it before the
next, so the messages of one key (one partition) reach the broker in the order sent, with
or without idempotence. Without it, a retry after a lost acknowledgement may write a
batch twice (a duplicate, never a reordering).

Topics the sink needs are created when missing (`cleanup.policy=compact`: the messages are
keyed for log compaction), with the URL's partitions and replication factor.
aiokafka's own log lines are silenced: each failure reaches the user as the sink's one line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from skyfill.sinks.exceptions import SinkUnavailable, SinkWriteError, one_line
from skyfill.sinks.kafka_url import KafkaTarget

logging.getLogger("aiokafka").setLevel(logging.CRITICAL)

T = TypeVar("T")
MAX_BATCH_BYTES = 512 * 1024
"""Bytes per partition batch (aiokafka's default is 16 KiB): fewer, larger requests."""
MAX_REQUEST_BYTES = 4 << 20
"""The largest message the client sends (a record is up to 1 MiB of CBOR, more as JSON);
the broker's `max.message.bytes` (about 1 MB by default, compressed) has the last word."""
REQUEST_TIMEOUT_MS = 30_000
"""A request (and a batch waiting for room) gives up after this long."""
TOPIC_CONFIG = {"cleanup.policy": "compact"}


@dataclass(frozen=True, slots=True)
class Message:
    topic: str
    key: bytes
    value: bytes | None
    """None: a tombstone (the key is deleted by log compaction)."""
    headers: tuple[tuple[str, bytes], ...]


class Publisher:
    """A started producer on its own loop; `close` stops both."""

    def __init__(self, target: KafkaTarget) -> None:
        self.target = target
        self.sent = 0
        """Messages acknowledged by the broker, in all."""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="kafka-publisher", daemon=True
        )
        self._thread.start()
        self._producer: Any = None
        self._pending = 0
        self._failure: BaseException | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self, topics: Iterable[str]) -> None:
        """Connect, create the topics that are missing. Raises SinkUnavailable."""
        try:
            self._run(self._start(tuple(topics)))
        except SinkUnavailable:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise SinkUnavailable(f"kafka {self._where()}: {_describe(exc)}") from None

    async def _start(self, topics: tuple[str, ...]) -> None:
        from aiokafka import AIOKafkaProducer

        await self._ensure_topics(topics)
        producer = AIOKafkaProducer(
            bootstrap_servers=",".join(self.target.bootstrap),
            acks="all",
            enable_idempotence=self.target.idempotence,
            compression_type=self.target.codec,
            linger_ms=self.target.linger_ms,
            max_batch_size=MAX_BATCH_BYTES,
            max_request_size=MAX_REQUEST_BYTES,
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            client_id="skyfill",
        )
        try:
            await producer.start()
        except Exception as exc:
            await producer.stop()
            if self.target.idempotence and type(exc).__name__ == "UnknownError":
                raise SinkUnavailable(
                    f"kafka {self._where()}: the broker refused an idempotent producer "
                    "(InitProducerId failed); add ?idempotence=false for a broker without it"
                ) from None
            raise
        self._producer = producer

    async def _ensure_topics(self, topics: tuple[str, ...]) -> None:
        from aiokafka.admin import AIOKafkaAdminClient, NewTopic

        admin = AIOKafkaAdminClient(
            bootstrap_servers=",".join(self.target.bootstrap),
            request_timeout_ms=REQUEST_TIMEOUT_MS,
            client_id="skyfill",
        )
        await admin.start()
        try:
            missing = [t for t in topics if t not in set(await admin.list_topics())]
            if not missing:
                return
            replication = self.target.replication
            if replication is None:
                brokers = (await admin.describe_cluster()).get("brokers") or [None]
                replication = min(3, len(brokers))
            wanted = [
                NewTopic(t, self.target.partitions, replication, topic_configs=TOPIC_CONFIG)
                for t in missing
            ]
            response = await admin.create_topics(wanted)
            for name, code, message in _topic_errors(response):
                if code not in (0, 36):  # 36: created meanwhile by another writer
                    raise SinkUnavailable(
                        f"kafka {self._where()}: topic {name} could not be created "
                        f"(error {code}: {message})"
                    )
        finally:
            await admin.close()

    def publish(self, messages: Iterable[Message]) -> int:
        """Hand the messages to the producer (it batches them); returns how many. A
        failure shows at the next `flush`."""
        return self._run(self._publish(messages))

    async def _publish(self, messages: Iterable[Message]) -> int:
        count = 0
        for message in messages:
            try:
                future = await self._producer.send(
                    message.topic,
                    value=message.value,
                    key=message.key,
                    headers=list(message.headers),
                )
            except Exception as exc:
                self._failure = self._failure or exc
                break
            self._pending += 1
            future.add_done_callback(self._delivered)
            count += 1
        return count

    def _delivered(self, future: asyncio.Future) -> None:
        self._pending -= 1
        if future.cancelled():
            self._failure = self._failure or asyncio.CancelledError()
        elif (exc := future.exception()) is not None:
            self._failure = self._failure or exc
        else:
            self.sent += 1

    def flush(self) -> None:
        """Return once every message published so far is acknowledged by the broker, or
        raise SinkWriteError (the first failure; what was not acknowledged is sent again
        by the next run)."""
        self._run(self._flush())
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise SinkWriteError(
                f"kafka {self._where()}: a message was not acknowledged: {_describe(failure)}"
            )

    async def _flush(self) -> None:
        await self._producer.flush()
        for _ in range(10_000):  # the futures' callbacks run just after flush's wake-up
            if not self._pending or self._failure is not None:
                return
            await asyncio.sleep(0.001)
        self._failure = TimeoutError(f"{self._pending} messages never acknowledged")

    def close(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            with contextlib.suppress(Exception):  # a broker gone already: nothing to say
                self._run(producer.stop())
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()

    def _where(self) -> str:
        return ",".join(self.target.bootstrap)


def _topic_errors(response: Any) -> list[tuple[str, int, str | None]]:
    out = []
    for error in response.topic_errors:
        name, code, *rest = error
        out.append((name, code, rest[0] if rest else None))
    return out


def _describe(exc: BaseException) -> str:
    text = one_line(str(exc))
    name = type(exc).__name__
    return f"{name}: {text}" if text and name not in text else text or name

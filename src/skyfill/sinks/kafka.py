"""Kafka sink of a backfill: every record of the job and every repos row, published as
keyed messages (`kafka_messages.py`) to the records topic and the repos topic.

`write` streams the aggregator's Arrow batches into the producer (which holds at most a
batch per partition), then waits until the broker has acknowledged every message; only
then does it return, and only then is the job's aggregation recorded as done. A run
killed before that publishes the whole job again on `resume`: messages may be
duplicated, never lost, and a duplicate carries the same key and value, so the topics
compacted (or folded by key) are the same.

A job publishes what it fetched: each `ok` repo's records (`op` create) and one repos row
per DID. It sends no tombstone for a record that an earlier job published and that is
gone now, nor for the records of an account that is gone: Kafka keeps no table to compare
with. A consumer that needs that takes the repos row (status not `ok`: drop the DID's
records) — or follows the stream (`skyfill firehose`), whose deletes are tombstones.
"""

from __future__ import annotations

import time
from typing import Any

import pyarrow as pa

from skyfill.failpoints import failpoint
from skyfill.sinks.kafka_messages import batch_rows, record_message, repo_message
from skyfill.sinks.kafka_publisher import Publisher
from skyfill.sinks.kafka_url import KafkaTarget


class KafkaSink:
    kind = "kafka"

    def __init__(self, target: KafkaTarget) -> None:
        self.spec = target
        self.target = target.url

    @property
    def topics(self) -> tuple[str, str]:
        return self.spec.topic, self.spec.repos_topic

    def check(self) -> None:
        """Connect and create the topics that are missing (raises SinkUnavailable)."""
        publisher = Publisher(self.spec)
        publisher.start(self.topics)
        publisher.close()

    def write(self, records: pa.RecordBatchReader, repos: pa.RecordBatchReader) -> dict[str, Any]:
        started = time.monotonic()
        publisher = Publisher(self.spec)
        publisher.start(self.topics)
        try:
            topic, repos_topic = self.topics
            published = {"records": 0, "repos": 0}
            for batch in records:
                messages = (record_message(topic, row) for row in batch_rows(batch))
                published["records"] += publisher.publish(messages)
            for batch in repos:
                messages = (repo_message(repos_topic, row) for row in batch_rows(batch))
                published["repos"] += publisher.publish(messages)
            publisher.flush()
            failpoint("kafka_published")  # acknowledged, the job not yet told: resent
        finally:
            publisher.close()
        return {
            "sink": {
                "kind": self.kind,
                "target": self.target,
                "published": published,
                "seconds": {"publish": round(time.monotonic() - started, 3)},
            }
        }

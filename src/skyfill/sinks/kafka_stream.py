"""Kafka stream sink: a stream's changes as keyed messages (`kafka_messages.py`), a batch
at a time.

`apply` turns a batch into messages — a put is a record message (`op` create or update),
a delete a tombstone, a reset or an erase a tombstone for each record the topic still
holds for the repo (`kafka_ledger.py` knows them), a repo update the repos row — sends
them, and returns once the broker has acknowledged all of them. Only then does the
consumer save the stream's cursor (in the stream's own state, `streams/ID/state.sqlite`):
a run killed at any moment resumes at or before its last acknowledged batch, so no
message is lost; the batch in flight is sent again (duplicates, same key and value).

`cursor` returns None: the topics hold no cursor; the stream's state does, written only
after the acknowledgement. Revs are compared as the SQL sinks compare them, against the
ledger: a change older than what was published is skipped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from skyfill.failpoints import failpoint
from skyfill.sinks.changes import (
    ApplyCounts,
    ChangeBatch,
    RecordDelete,
    RecordPut,
    RepoReset,
    RepoUpdate,
)
from skyfill.sinks.kafka_ledger import Ledger, Pending
from skyfill.sinks.kafka_messages import (
    REPO_FIELDS,
    Message,
    record_message,
    record_uri,
    repo_message,
    tombstone,
)
from skyfill.sinks.kafka_publisher import Publisher
from skyfill.sinks.kafka_url import KafkaTarget

log = logging.getLogger(__name__)
LEDGER_FILE = "kafka.sqlite"


class KafkaStreamSink:
    kind = "kafka"

    def __init__(self, target: KafkaTarget, stream_id: str, state_dir: Path) -> None:
        self.spec = target
        self.target = target.url
        self._stream_id = stream_id
        self._ledger_path = Path(state_dir) / LEDGER_FILE
        self._ledger: Ledger | None = None
        self._publisher: Publisher | None = None

    def check(self) -> None:
        self._open()

    def _open(self) -> tuple[Publisher, Ledger]:
        if self._publisher is None:
            publisher = Publisher(self.spec)
            publisher.start((self.spec.topic, self.spec.repos_topic))
            self._publisher = publisher
        if self._ledger is None:
            mirrors = f"{','.join(self.spec.bootstrap)}/{self.spec.topic}+{self.spec.repos_topic}"
            self._ledger = Ledger(self._ledger_path, mirrors)
            if self._ledger.started_over:
                log.warning(
                    "%s mirrored other topics: started over for %s", self._ledger_path, mirrors
                )
        return self._publisher, self._ledger

    def cursor(self, source: str) -> int | None:
        return None  # the stream's own state holds it, saved after the broker's ack

    def apply(self, batch: ChangeBatch) -> ApplyCounts:
        publisher, ledger = self._open()
        pending = ledger.begin()
        builder = _Batch(self.spec, self._stream_id, pending)
        for change in batch.changes:
            builder.add(change)
        messages = builder.finish()
        publisher.publish(messages)
        publisher.flush()
        failpoint("kafka_published")  # acknowledged, not yet in the ledger: sent again
        pending.commit()
        return builder.counts

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None
        if self._ledger is not None:
            self._ledger.close()
            self._ledger = None

    def facts(self) -> dict[str, Any]:
        _, ledger = self._open()
        return {"published": ledger.counts(), "messages": self._publisher_sent()}

    def _publisher_sent(self) -> int:
        return self._publisher.sent if self._publisher is not None else 0


class _Batch:
    """One batch's messages, decided against the ledger (read through `pending`)."""

    def __init__(self, spec: KafkaTarget, stream_id: str, pending: Pending) -> None:
        self._topic = spec.topic
        self._repos_topic = spec.repos_topic
        self._stream_id = stream_id
        self._pending = pending
        self._now = datetime.now(UTC).isoformat()
        self._messages: list[Message] = []
        self._touched: dict[str, int] = {}
        """DID -> the seq of its last change in the batch."""
        self.counts = ApplyCounts()

    def add(self, change: RecordPut | RecordDelete | RepoReset | RepoUpdate) -> None:
        self._touched[change.did] = change.seq
        if isinstance(change, RecordPut):
            self._put(change)
        elif isinstance(change, RecordDelete):
            self._delete(change)
        elif isinstance(change, RepoReset):
            self._reset(change)
        else:
            self._repo(change)

    def _put(self, c: RecordPut) -> None:
        key = (c.collection, c.rkey)
        held = self._pending.rev(c.did, key)
        if held is not None and held >= c.rev:
            self.counts.skipped += 1
            return
        row = {
            "did": c.did,
            "collection": c.collection,
            "rkey": c.rkey,
            "uri": record_uri(c.did, c.collection, c.rkey),
            "cid": c.cid,
            "rev": c.rev,
            "created_at": c.created_at,
            "job_id": self._stream_id,
            "record": c.record,
        }
        self._messages.append(record_message(self._topic, row, c.action, c.seq))
        self._pending.put(c.did, key, c.rev)
        self.counts.upserted += 1

    def _delete(self, c: RecordDelete) -> None:
        key = (c.collection, c.rkey)
        held = self._pending.rev(c.did, key)
        if held is not None and held >= c.rev:
            self.counts.skipped += 1
            return
        # sent even when the ledger holds no value for it: a tombstone too many is harmless
        self._tombstone(c.did, key, c.rev, c.seq)

    def _tombstone(self, did: str, key: tuple[str, str], rev: str | None, seq: int) -> None:
        self._messages.append(tombstone(self._topic, did, *key, rev, seq))
        self._pending.delete(did, key)
        self.counts.deleted += 1

    def _reset(self, c: RepoReset) -> None:
        """Records at or below the reset's rev that it does not hold go; its records are
        put unless a newer value is published (from events after the snapshot)."""
        rows = c.records.to_pylist()
        fresh = {(r["collection"], r["rkey"]) for r in rows}
        for key, rev in sorted(self._pending.keys_of(c.did).items()):
            if rev <= c.rev and key not in fresh:
                self._tombstone(c.did, key, c.rev, c.seq)
        for r in rows:
            key = (r["collection"], r["rkey"])
            held = self._pending.rev(c.did, key)
            if held is not None and held > c.rev:
                self.counts.skipped += 1
                continue
            row = {**r, "did": c.did, "uri": record_uri(c.did, *key), "job_id": self._stream_id}
            op = "create" if held is None else "update"
            self._messages.append(record_message(self._topic, row, op, c.seq))
            self._pending.put(c.did, key, r["rev"])
            self.counts.upserted += 1

    def _repo(self, c: RepoUpdate) -> None:
        if c.erase:
            for key in sorted(self._pending.keys_of(c.did)):
                self._tombstone(c.did, key, c.rev, c.seq)
        self._pending.set_repo(c.did, _merged(self._pending.repo(c.did), c, self._now))
        self.counts.repos += 1

    def finish(self) -> list[Message]:
        """The batch's messages: its record messages in order, then one repos row for
        each DID it touched that has one (with its record count after the batch)."""
        for did, seq in self._touched.items():
            row = self._pending.repo(did)
            if row is None:
                continue
            row = {**row, "record_count": self._pending.count(did)}
            self._pending.set_repo(did, row)
            self._messages.append(repo_message(self._repos_topic, row, seq))
        return self._messages


def _merged(before: dict[str, Any] | None, c: RepoUpdate, now: str) -> dict[str, Any]:
    """The repos row after `c`, as the SQL stream sinks' upsert makes it: the status and
    error always; handle and pds when given; rev and commit_cid when newer."""
    row: dict[str, Any] = dict(before) if before else dict.fromkeys(REPO_FIELDS)
    row["did"] = c.did
    row["status"] = c.status
    if c.handle is not None:
        row["handle"] = c.handle
    if c.pds is not None:
        row["pds"] = c.pds
    if c.rev is not None and (row["rev"] is None or c.rev > row["rev"]):
        row["rev"], row["commit_cid"] = c.rev, c.commit_cid
    row["error"] = c.error
    row["fetched_at"] = now
    return row

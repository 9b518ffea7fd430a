"""BackfillHandler: the backfill job type plugged into the engine."""

from __future__ import annotations

import asyncio
import dataclasses
import os
from collections import Counter
from collections.abc import AsyncGenerator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa

from skyfill.atproto import fastrepo
from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.xrpc import XrpcClient, host_key
from skyfill.backfill import fetch_pool
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.discovery import HostDiscovery
from skyfill.backfill.fetch_pool import FetchPool, auto_processes
from skyfill.backfill.fetcher import RepoFetcher
from skyfill.backfill.input import read_did_file
from skyfill.backfill.previous import PreviousJob, carried_dids, carry_over
from skyfill.backfill.schema import (
    NEWEST_COLUMN,
    PARTITION_COLUMN,
    RECORD_KEY,
    RECORDS_SCHEMA,
    REPOS_SCHEMA,
)
from skyfill.engine.discovery import DiscoveryContext
from skyfill.engine.executor import make_executor
from skyfill.engine.handler import AggregateContext, Plan
from skyfill.engine.layout import JobLayout
from skyfill.engine.model import Batch, ItemOutput, ItemResult
from skyfill.engine.state.base import StateStore
from skyfill.errors import Outcome
from skyfill.net.transport import HttpTransport, make_transport
from skyfill.ratelimit.local import LocalLimiter
from skyfill.ratelimit.memory_gate import MemoryGate
from skyfill.ratelimit.shared import SharedBudget
from skyfill.sinks.base import LoadScope, Sink
from skyfill.sinks.factory import open_sink
from skyfill.storage import arrow_compute as pc

THREAD_INLINE_BYTES = 32 * 1024
"""With decoding threads, CARs up to this size are decoded on the event loop: handing them
to a thread costs about as much as decoding them."""


class BackfillHandler:
    job_type = "backfill"
    output_schema = RECORDS_SCHEMA
    dedup_key = RECORD_KEY
    newest_column = NEWEST_COLUMN
    group_by = PARTITION_COLUMN
    """The Parquet output is partitioned by collection: rows grouped by it are written as
    they come (see AggregateContext.rows)."""

    def __init__(self, config: BackfillConfig, sink_password: str | None = None) -> None:
        self.config = config
        # The password of a PostgreSQL --sink URL: used in this process, never stored.
        self._sink_password = sink_password
        self._transport: HttpTransport | None = None
        self._fetcher: RepoFetcher | None = None
        self._executor = None
        self._pool: FetchPool | None = None
        """With --fetch-processes: the processes that fetch and decode."""
        self.limiter: LocalLimiter | None = None
        self._client: XrpcClient | None = None
        self.shared_budget: SharedBudget | None = None
        """Set before `open` in distributed mode: the hosts' budgets shared by all workers."""
        self.memory = MemoryGate(None)
        self._open_items = 0
        self._identity_hosts: frozenset[str] = frozenset()
        self.records_by_collection: Counter[str] = Counter()
        """Records decoded in this run, per collection."""
        self.dids_done = 0
        self.retries = 0
        """Tries beyond each DID's first, in this run (429s excluded: they are not tries)."""

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> BackfillHandler:
        return cls(BackfillConfig.from_dict(config))

    def config_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    # -- coordinator --------------------------------------------------------------------

    def plan(self) -> Plan:
        """Read the DID file (if any), and make sure the sink can be written before any
        fetch. Hosts to list (--from-host, --from-relay) are listed while the job runs.

        The DIDs are planned sorted: each task then covers its own range of DIDs, and the
        aggregation only concatenates the tasks' sorted files (`merge_in_memory`)."""
        self.sink(Path(self.config.job_id) / "output").check()
        hosts = {
            "from_hosts": self.config.from_hosts,
            "from_relays": self.config.from_relays,
            "collection": self.config.collection,
        }
        if self.config.previous:
            return self._refresh_plan(hosts)
        if not self.config.dids_file:
            return Plan(items=[], input_description={"kind": "hosts", **hosts})
        path = Path(self.config.dids_file)
        parsed = read_did_file(path)
        if not self.discovers():
            self.config = dataclasses.replace(self.config, planned_dids=len(parsed.dids))
        return Plan(
            items=sorted(parsed.dids),
            input_description={
                "kind": "did_file",
                "path": str(path.resolve()),
                "lines": parsed.lines,
                "dids": len(parsed.dids),
                "duplicates": parsed.duplicates,
                "malformed": len(parsed.malformed),
                **(hosts if self.discovers() else {}),
            },
            warnings=parsed.warnings(),
        )

    def _refresh_plan(self, hosts: dict[str, Any]) -> Plan:
        """The previous job's DIDs and those of the DID file (if any), each once, sorted."""
        assert self.config.previous is not None
        previous = PreviousJob(Path(self.config.previous))
        try:
            items = previous.dids()
        finally:
            previous.close()
        warnings: list[str] = []
        if self.config.dids_file:
            parsed = read_did_file(Path(self.config.dids_file))
            items = [*items, *parsed.dids]
            warnings = parsed.warnings()
        return Plan(
            items=sorted(set(items)),
            input_description={"kind": "refresh", "previous": self.config.previous, **hosts},
            warnings=warnings,
        )

    def carried_inputs(self, layout: JobLayout, store: StateStore) -> list[tuple[Path, int]]:
        """A refresh: the previous job's rows of the repos that did not change (or that
        this job could not read anything trustworthy of)."""
        if not self.config.previous:
            return []
        previous = PreviousJob(Path(self.config.previous))
        try:
            carried = carried_dids(store.iter_items())
            if not len(carried):
                return []
            return carry_over(previous, carried, layout.aggregation / "carried", RECORDS_SCHEMA)
        finally:
            previous.close()

    def discovers(self) -> bool:
        return bool(self.config.from_hosts or self.config.from_relays)

    async def discover(self, ctx: DiscoveryContext) -> None:
        assert self._client is not None, "open() first"
        await HostDiscovery(self.config, self._client).run(ctx)

    # -- workers ------------------------------------------------------------------------

    async def open(self) -> None:
        cfg = self.config
        self._transport = make_transport(cfg.http_settings(cfg.concurrency), cfg.http_client)
        self.limiter = LocalLimiter(cfg.limit_settings(), budget=self.shared_budget)
        self.memory = MemoryGate(cfg.max_memory)
        if cfg.max_memory is not None:
            return_freed_memory()
        self._identity_hosts = frozenset({host_key(cfg.plc_url)})
        client = self._client = XrpcClient(
            self._transport, cfg.allow_private_network, self.limiter, admission=self.memory.slot
        )
        # Under a memory limit, decode in-process: each decoding process costs ~150 MB idle.
        processes = 0 if cfg.max_memory is not None else cfg.decode_processes
        # In-process, the C decoder runs on threads (it releases the GIL): one per core.
        threads = (os.cpu_count() or 1) if processes == 0 and fastrepo.ENABLED else 0
        self._executor = make_executor(processes, threads)
        processes = self._fetch_processes()
        if self._uses_pool(processes):
            opener = self.shared_budget.opener() if self.shared_budget is not None else None
            self._pool = FetchPool(cfg, processes, self.records_by_collection, opener)
        self._fetcher = RepoFetcher(
            cfg,
            client,
            IdentityResolver(client, cfg.plc_url),
            self._executor,
            inline_bytes=cfg.inline_decode_bytes if processes else THREAD_INLINE_BYTES,
            records_by_collection=self.records_by_collection,
            baseline_rss=self.memory.rss(),
            previous=PreviousJob(Path(cfg.previous)) if cfg.previous else None,
        )

    def _fetch_processes(self) -> int:
        """`--fetch-processes`, or the default for this job (see `auto_processes`)."""
        cfg = self.config
        if cfg.fetch_processes is not None:
            return cfg.fetch_processes
        return auto_processes(cfg.planned_dids, distributed=self.shared_budget is not None)

    def _uses_pool(self, processes: int) -> bool:
        """Fetch processes: not under a memory limit (each child holds its own CARs), nor in
        a refresh (the previous job is read by the fetcher, in this process), nor with a
        shared budget that only this process can lease from."""
        cfg, budget = self.config, self.shared_budget
        return (
            processes > 0
            and cfg.max_memory is None
            and not cfg.previous
            and (budget is None or budget.opener() is not None)
        )

    def start_processes(self) -> None:
        """Fork the job's fetch processes now: called before the event loop, while this
        process runs no other thread, they start at once with everything imported (a
        spawned one takes ~0.3 s of CPU to import skyfill). `open()` takes them."""
        processes = self._fetch_processes()
        if self._uses_pool(processes):
            fetch_pool.start_early(processes)

    async def close(self) -> None:
        fetch_pool.stop_early()  # forked for a job that then fetched nothing
        if self.limiter is not None:
            await self.limiter.close()  # a shared budget's unspent slots, back to it
        if self._transport is not None:
            await self._transport.close()
        if self._executor is not None:
            self._executor.shutdown()
        if self._pool is not None:
            self._pool.shutdown()

    async def process(self, batch: Batch, items: list[str]) -> AsyncGenerator[ItemOutput, None]:
        if self._pool is not None:
            async for output in self._pool_process(items, batch.scratch):
                yield output
            return
        fetcher = self._fetcher
        assert fetcher is not None, "open() first"

        pending = {asyncio.ensure_future(fetcher.fetch(did, batch.scratch)) for did in items}
        self._open_items += len(pending)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    self._open_items -= 1
                    output = future.result()
                    self._tally(output)
                    yield output
        finally:
            self._open_items -= len(pending)
            for future in pending:
                future.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _pool_process(
        self, items: list[str], scratch: Path | None
    ) -> AsyncGenerator[ItemOutput, None]:
        """The items fetched by the fetch processes (which count their records)."""
        pool = self._pool
        assert pool is not None
        self._open_items += len(items)
        done = 0
        try:
            assert scratch is not None, "the engine gives every batch a scratch directory"
            async for output in pool.fetch(items, scratch):
                done += 1
                self._open_items -= 1
                self._tally(output)
                yield output
        finally:
            self._open_items -= len(items) - done

    def wants_more_work(self) -> bool:
        """True when fewer items can make progress than the concurrency allows: the rest
        wait for throttled hosts, so the engine should open another task."""
        if self.limiter is None:
            return False
        # Waits on the PLC directory do not count: every DID needs it, more tasks only queue.
        blocked = self.limiter.blocked_on_hosts(exclude=self._identity_hosts)
        return self._open_items - blocked < self.config.concurrency

    def _tally(self, output: ItemOutput) -> None:
        # (records by collection are counted by the fetcher, as it decodes)
        self.dids_done += 1
        self.retries += max(0, output.result.attempts - 1)

    def _host_snapshot(self) -> dict[str, dict]:
        """Per-host counters of this process's requests and of its fetch processes'."""
        assert self.limiter is not None
        hosts = self.limiter.snapshot()
        if self._pool is not None:
            hosts = {**hosts, **self._pool.host_snapshot()}
        return hosts

    def live_stats(self) -> dict[str, Any]:
        """Per-host counters (with latency histograms), totals and memory of this run,
        published to the state store while the job runs."""
        if self.limiter is None:
            return {}
        hosts = self._host_snapshot()
        return {
            "hosts": hosts,
            "totals": _host_totals(hosts),
            "dids": self.dids_done,
            "retries": self.retries,
            "records": sum(self.records_by_collection.values()),
            "records_by_collection": dict(self.records_by_collection.most_common()),
            "memory": {
                "rss": self.memory.rss(),
                "peak_rss": self.memory.peak,
                "limit": self.memory.limit,
                "waits": self.memory.waits,
            },
        }

    def sample_stats(self) -> dict[str, Any]:
        """This run's counters for the job's timeline: totals, records per collection, and
        a summary of the busiest hosts (requests, 429s, bytes, latency quantiles)."""
        if self.limiter is None:
            return {}
        hosts = self._host_snapshot()
        busiest = sorted(hosts.items(), key=lambda kv: -kv[1]["requests"])[:TIMELINE_HOSTS]
        return {
            **_host_totals(hosts),
            "dids": self.dids_done,
            "retries": self.retries,
            "records": sum(self.records_by_collection.values()),
            "records_by_collection": dict(self.records_by_collection),
            "rss": self.memory.rss(),
            "hosts": {name: {key: h[key] for key in _SAMPLED_HOST_KEYS} for name, h in busiest},
        }

    # -- aggregator ---------------------------------------------------------------------

    def sink(self, output: Path) -> Sink:
        """The job's sink (`output`: the job's output directory, for Parquet)."""
        cfg = self.config
        return open_sink(
            cfg.sink,
            output=output,
            scope=LoadScope(
                collections=tuple(cfg.collections) if cfg.collections else None,
                complete=cfg.since is None,
            ),
            password=self._sink_password,
            low_memory=cfg.max_memory is not None,
        )

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        """Hand the merged records and one row per DID to the sink, counting both."""
        by_collection: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        records = pa.RecordBatchReader.from_batches(
            ctx.rows.schema, counted(ctx.rows, "collection", by_collection)
        )
        repos = pa.RecordBatchReader.from_batches(
            REPOS_SCHEMA, counted(repos_batches(ctx.store.iter_items()), "status", by_status)
        )
        facts = self.sink(ctx.layout.output).write(records, repos)
        return {
            "total_rows": by_collection.total(),
            "repos": by_status.total(),
            "records_by_collection": dict(sorted(by_collection.items())),
            "repos_by_status": dict(sorted(by_status.items())),
            **facts,
        }


REPOS_BATCH_ROWS = 50_000
TIMELINE_HOSTS = 20
"""Hosts (the busiest) described in each point of the job's timeline."""
_SAMPLED_HOST_KEYS = (
    "requests",
    "rate_limited",
    "errors",
    "bytes",
    "wait_seconds",
    "p50_ms",
    "p95_ms",
    "p99_ms",
)


def _host_totals(hosts: dict[str, dict]) -> dict[str, float]:
    return {
        "requests": sum(h["requests"] for h in hosts.values()),
        "rate_limited": sum(h["rate_limited"] for h in hosts.values()),
        "errors": sum(h["errors"] for h in hosts.values()),
        "bytes": sum(h["bytes"] for h in hosts.values()),
        "wait_seconds": round(sum(h["wait_seconds"] for h in hosts.values()), 3),
    }


def return_freed_memory() -> None:
    """Have Arrow give freed memory back to the OS at once (jemalloc, no decay) rather than
    keep it pooled, so that RSS follows what is really in use under --max-memory."""
    try:
        pa.set_memory_pool(pa.jemalloc_memory_pool())
        pa.jemalloc_set_decay_ms(0)  # also the C++ default pool (skyfill/__init__.py)
    except (NotImplementedError, pa.ArrowNotImplementedError):
        pa.set_memory_pool(pa.system_memory_pool())


def repos_batches(items: Iterator[ItemResult]) -> Iterator[pa.RecordBatch]:
    """One row per DID, from the outcomes in the state store, a bounded batch at a time."""
    columns: dict[str, list] = {name: [] for name in REPOS_SCHEMA.names}
    for count, item in enumerate(items, start=1):
        _append_repo_row(columns, item)
        if count % REPOS_BATCH_ROWS == 0:
            yield pa.RecordBatch.from_pydict(columns, schema=REPOS_SCHEMA)
            columns = {name: [] for name in REPOS_SCHEMA.names}
    if columns["did"]:
        yield pa.RecordBatch.from_pydict(columns, schema=REPOS_SCHEMA)


def _append_repo_row(columns: dict[str, list], item: ItemResult) -> None:
    data = item.data
    fetched = data.get("fetched_at")
    columns["did"].append(item.key)
    columns["handle"].append(data.get("handle"))
    columns["pds"].append(data.get("pds"))
    columns["status"].append(item.status)
    columns["rev"].append(data.get("rev"))
    columns["commit_cid"].append(data.get("commit_cid"))
    columns["record_count"].append(
        data.get("record_count", 0 if item.status == Outcome.OK else None)
    )
    columns["car_bytes"].append(data.get("car_bytes"))
    columns["attempts"].append(item.attempts)
    columns["error"].append(item.error)
    columns["fetched_at"].append(datetime.fromtimestamp(fetched, tz=UTC) if fetched else None)


def counted(
    batches: Iterator[pa.RecordBatch] | pa.RecordBatchReader, column: str, counts: Counter[str]
) -> Iterator[pa.RecordBatch]:
    """The batches, unchanged, while `counts` tallies the values of `column`."""
    for batch in batches:
        for entry in pc.value_counts(batch.column(column)).to_pylist():
            counts[entry["values"]] += entry["counts"]
        yield batch

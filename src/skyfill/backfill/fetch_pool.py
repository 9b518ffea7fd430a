"""Fetch processes (`--fetch-processes N`): DIDs resolved, fetched and decoded in N child
processes, each with its own event loop, HTTP connections and limiter, so that a backfill
uses every core, not only the decoder's share of them.

The coordinator (the job's process) keeps everything durable: it hands each child a chunk
of a task's DIDs and commits what comes back (outcomes and rows) exactly as it commits its
own fetches, so checkpoints, resume and the output do not change. Each child keeps 1/N of
every host's rate limit and of the concurrency (`share`), so N children together stay
within the limits one process would keep. A child that dies fails its chunk's DIDs
retryably (`worker_crashed`); the pool is replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import os
from collections import Counter
from collections.abc import AsyncIterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from skyfill import gcpolicy
from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.xrpc import XrpcClient
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.fetcher import RepoFetcher
from skyfill.engine.executor import InlineExecutor
from skyfill.engine.executor.process import init_child
from skyfill.engine.model import ItemOutput, ItemResult
from skyfill.errors import Outcome, WorkerCrashed
from skyfill.failpoints import failpoint
from skyfill.net.http import make_session
from skyfill.ratelimit.local import LimitSettings, LocalLimiter
from skyfill.telemetry.histogram import LatencyHistogram

CHUNK_DIDS = 25
"""DIDs per hand-over: a child works a chunk's DIDs at once and returns them together."""


class FetchPool:
    """The coordinator's side: chunks of DIDs to the children, their outputs back."""

    def __init__(
        self, config: BackfillConfig, processes: int, records_by_collection: Counter[str]
    ) -> None:
        self._config = config
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._records_by_collection = records_by_collection
        """The caller's counter: the records the children decoded are added to it."""
        self._hosts: dict[int, dict[str, dict]] = {}
        """Each child's latest per-host counters, by its pid."""

    def _new_pool(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            max_workers=self._processes,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_open_child,
            initargs=(os.getpid(), self._config.to_dict(), self._processes),
        )

    async def fetch(self, dids: list[str]) -> AsyncIterator[ItemOutput]:
        """Every DID's output, chunk by chunk as the children finish them."""
        if self._pool is None:
            self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        chunks = [dids[i : i + CHUNK_DIDS] for i in range(0, len(dids), CHUNK_DIDS)]
        pending = {asyncio.ensure_future(self._run(loop, chunk)): chunk for chunk in chunks}
        try:
            while pending:
                done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    del pending[future]
                    for output in future.result():
                        yield output
        finally:
            for future in pending:
                future.cancel()

    async def _run(self, loop: asyncio.AbstractEventLoop, chunk: list[str]) -> list[ItemOutput]:
        pool = self._pool
        assert pool is not None
        try:
            pid, outputs, counts, hosts = await loop.run_in_executor(pool, fetch_chunk, chunk)
        except BrokenProcessPool:
            if self._pool is pool:  # the first to notice replaces it
                self._pool = self._new_pool()
                pool.shutdown(wait=False, cancel_futures=True)
            return [_crashed(did) for did in chunk]
        self._records_by_collection.update(counts)
        self._hosts[pid] = hosts
        return outputs

    def host_snapshot(self) -> dict[str, dict]:
        """The children's per-host counters as one process's: counts summed, latency
        histograms merged (their quantiles recomputed), the rest as the first child has it."""
        merged: dict[str, dict] = {}
        for hosts in self._hosts.values():
            for host, stats in hosts.items():
                into = merged.get(host)
                merged[host] = dict(stats) if into is None else _merge_host(into, stats)
        return dict(sorted(merged.items()))

    def shutdown(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)


_SUMMED = (
    "requests",
    "rate_limited",
    "errors",
    "wait_seconds",
    "rate_per_s",
    "in_flight",
    "shared_waits",
    "waiting",
    "no_answer",
    "bytes",
)


def _merge_host(into: dict, stats: dict) -> dict:
    for key in _SUMMED:
        into[key] = (into.get(key) or 0) + (stats.get(key) or 0)
    by_status = Counter(into.get("by_status") or {})
    by_status.update(stats.get("by_status") or {})
    into["by_status"] = dict(sorted(by_status.items()))
    latency = LatencyHistogram.from_dict(into.get("latency"))
    latency.merge(LatencyHistogram.from_dict(stats.get("latency")))
    into["latency"] = latency.to_dict()
    for quantile, seconds in latency.summary().items():
        if quantile[0] == "p":
            into[f"{quantile}_ms"] = None if seconds is None else round(seconds * 1000, 2)
    return into


def _crashed(did: str) -> ItemOutput:
    error = WorkerCrashed("a fetch process died (killed or out of memory)")
    result = ItemResult(
        did,
        Outcome.FAILED,
        error_class=error.error_class,
        error=error.message,
        retryable=True,
        attempts=1,
        data={},
    )
    return ItemOutput(result, None)


# -- the children ------------------------------------------------------------------------


@dataclasses.dataclass
class _Child:
    loop: asyncio.AbstractEventLoop
    fetcher: RepoFetcher
    limiter: LocalLimiter


_child: _Child | None = None


def _open_child(parent_pid: int, config: dict[str, Any], processes: int) -> None:
    global _child
    init_child(parent_pid)
    cfg = BackfillConfig.from_dict(config)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _child = loop.run_until_complete(_open(cfg, cfg.limit_settings(share=processes)))
    gcpolicy.tune()


async def _open(cfg: BackfillConfig, limits: LimitSettings) -> _Child:
    session = make_session(cfg.http_settings(limits.global_concurrency))
    limiter = LocalLimiter(limits)
    client = XrpcClient(session, cfg.allow_private_network, limiter)
    fetcher = RepoFetcher(cfg, client, IdentityResolver(client, cfg.plc_url), InlineExecutor())
    return _Child(asyncio.get_running_loop(), fetcher, limiter)


def fetch_chunk(
    dids: list[str],
) -> tuple[int, list[ItemOutput], Counter[str], dict[str, dict]]:
    """In a child: the chunk's outputs, the records they hold by collection, and the
    child's per-host counters so far."""
    child = _child
    assert child is not None, "a fetch process starts with _open_child"
    failpoint("fetch_chunk")  # (tests: a child killed while it holds a chunk)
    counted = child.fetcher.records_by_collection
    counted.clear()  # a child works one chunk at a time: what it counts now is this chunk's
    outputs = child.loop.run_until_complete(_fetch_all(child, dids))
    return os.getpid(), outputs, Counter(counted), child.limiter.snapshot()


async def _fetch_all(child: _Child, dids: list[str]) -> list[ItemOutput]:
    # all at once, as the job's own process does: the child's limiter bounds what runs
    return list(await asyncio.gather(*(child.fetcher.fetch(did) for did in dids)))

"""Fetch processes (`--fetch-processes N`): DIDs resolved, fetched and decoded in N child
processes, each with its own event loop, HTTP connections and limiter, so that a backfill
uses every core, not only the decoder's share of them.

The coordinator (the job's process) keeps everything durable: it hands each child a chunk
of a task's DIDs (the whole task, unless more processes than open tasks need splitting
them) and commits what comes back exactly as it commits its own fetches, so
checkpoints, resume and the output do not change. The rows do not come back through a
pipe: a child sorts its chunk's rows into one file in the task's scratch directory, and
the coordinator commits that file as a segment (`SpilledRows` shared by the chunk's
items) with the chunk's outcomes. Each child keeps 1/N of
every host's rate limit and of the concurrency (`share`), so N children together stay
within the limits one process would keep. A child that dies fails its chunk's DIDs
retryably (`worker_crashed`); the pool is replaced.
"""

from __future__ import annotations

import asyncio
import dataclasses
import multiprocessing
import multiprocessing.util
import os
import secrets
from collections import Counter
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pyarrow as pa

from skyfill import gcpolicy
from skyfill.atproto import fastrepo
from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.identity.resolver import CACHE_SIZE
from skyfill.atproto.xrpc import XrpcClient
from skyfill.backfill.config import ENGINE, BackfillConfig
from skyfill.backfill.fetcher import RepoFetcher
from skyfill.backfill.streamed import SPEC
from skyfill.engine.executor import InlineExecutor
from skyfill.engine.executor.process import init_child
from skyfill.engine.model import ItemOutput, ItemResult, SpilledRows
from skyfill.errors import Outcome, WorkerCrashed
from skyfill.failpoints import failpoint
from skyfill.net.transport import HttpTransport, make_transport
from skyfill.ratelimit.local import LocalLimiter
from skyfill.ratelimit.shared import SharedBudget
from skyfill.storage import columnar, spool
from skyfill.storage.merge import sort_table_by_group
from skyfill.telemetry.histogram import LatencyHistogram

AUTO_MIN_DIDS = 1000
"""Jobs this big or bigger get a fetch process per core by default: starting the
processes (~0.3 s of CPU each) costs more than they save on a smaller job."""


def auto_processes(dids: int | None, distributed: bool) -> int:
    """`--fetch-processes` unset, for a job of `dids` (None: not known, a host listing):
    with more than one core and the C decoder, one per core, or one per distributed worker
    (workers are run one per core); none for a smaller job."""
    cores = os.cpu_count() or 1
    big = dids is None or dids >= AUTO_MIN_DIDS
    if not big or cores < 2 or not fastrepo.ENABLED:
        return 0
    return 1 if distributed else cores


CHUNK_DIDS = 100
"""DIDs per hand-over at most: a child works a chunk's DIDs at once and returns them
together, their rows in one file that is one segment; a task of one segment needs no
merge at its end, so a task is one chunk unless that would leave processes idle."""


def chunk_size(dids: int, processes: int, open_tasks: int = ENGINE.parallel_tasks) -> int:
    """DIDs per chunk of a task of `dids`: the whole task (up to CHUNK_DIDS) while the
    `open_tasks` tasks the engine keeps open give every process a chunk; split into as
    many chunks as it takes when there are more processes than that (16 cores: 4 chunks
    of 25 per task, not 4 busy processes and 12 idle)."""
    per_task = -(-processes // max(1, open_tasks))
    return max(1, min(CHUNK_DIDS, -(-dids // per_task)))


class FetchPool:
    """The coordinator's side: chunks of DIDs to the children, their outputs back."""

    def __init__(
        self,
        config: BackfillConfig,
        processes: int,
        records_by_collection: Counter[str],
        budget: Callable[[], SharedBudget] | None = None,
    ) -> None:
        self._processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self._records_by_collection = records_by_collection
        """The caller's counter: the records the children decoded are added to it."""
        self._hosts: dict[int, dict[str, dict]] = {}
        """Each child's latest per-host counters, by its pid."""
        self._opening: Opening = (config.to_dict(), processes, budget)
        """What a child opens the job with, before its first chunk (`_open_child`); the
        budget (distributed) is how a child opens the hosts' budget every worker shares."""

    def _new_pool(self) -> ProcessPoolExecutor:
        return _started_early(self._processes) or _executor(self._processes, "spawn")

    async def fetch(self, dids: list[str], scratch: Path) -> AsyncIterator[ItemOutput]:
        """Every DID's output, chunk by chunk as the children finish them (a chunk's
        outputs one after another; the rows in files in `scratch`)."""
        if self._pool is None:
            self._pool = self._new_pool()
        loop = asyncio.get_running_loop()
        size = chunk_size(len(dids), self._processes)
        chunks = [dids[i : i + size] for i in range(0, len(dids), size)]
        pending = {
            asyncio.ensure_future(self._run(loop, chunk, scratch)): chunk for chunk in chunks
        }
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

    async def _run(
        self, loop: asyncio.AbstractEventLoop, chunk: list[str], scratch: Path
    ) -> list[ItemOutput]:
        pool = self._pool
        assert pool is not None
        try:
            pid, outputs, counts, hosts = await loop.run_in_executor(
                pool, fetch_chunk, chunk, str(scratch), self._opening
            )
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


def _executor(processes: int, start: str) -> ProcessPoolExecutor:
    """Children started by `start`: "spawn" (a new Python that imports this module) or
    "fork" (a copy of this process, which must then run no other thread)."""
    return ProcessPoolExecutor(
        max_workers=processes,
        mp_context=multiprocessing.get_context(start),
        initializer=_start_child,
        initargs=(os.getpid(),),
    )


_early: tuple[int, ProcessPoolExecutor] | None = None
"""Fetch processes forked before the job's event loop (`start_early`), and how many."""


def start_early(processes: int) -> None:
    """Fork `processes` fetch processes now, before the event loop that will use them: the
    caller runs no other thread (a fork copies only the calling one, and a lock another
    thread held would stay held in the child). They start with everything imported; the
    first pool of as many processes takes them, and `stop_early` ends them if none does.
    A pool that replaces a broken one spawns its processes."""
    global _early
    if _early is not None or processes <= 0:
        return
    pool = _executor(processes, "fork")
    pool.submit(os.getpid)  # a fork pool starts all its processes with its first task
    _early = processes, pool


def _started_early(processes: int) -> ProcessPoolExecutor | None:
    global _early
    if _early is None or _early[0] != processes:
        return None
    pool, _early = _early[1], None
    return pool


def stop_early() -> None:
    """End the fetch processes `start_early` forked if no pool took them."""
    global _early
    if _early is not None:
        _early[1].shutdown(wait=True, cancel_futures=True)
        _early = None


# -- the children ------------------------------------------------------------------------


@dataclasses.dataclass
class _Child:
    loop: asyncio.AbstractEventLoop
    fetcher: RepoFetcher
    limiter: LocalLimiter
    transport: HttpTransport


_child: _Child | None = None


Opening = tuple[dict[str, Any], int, "Callable[[], SharedBudget] | None"]
"""A job as a child opens it: its config, the number of processes, the shared budget."""


def _start_child(parent_pid: int) -> None:
    init_child(parent_pid)
    gcpolicy.tune()


def _open_child(
    config: dict[str, Any], processes: int, budget: Callable[[], SharedBudget] | None
) -> None:
    global _child
    cfg = BackfillConfig.from_dict(config)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    _child = loop.run_until_complete(_open(cfg, processes, budget))
    # run as the child exits (when the pool shuts down): its connections closed, quietly
    multiprocessing.util.Finalize(None, _close_child, exitpriority=10)


def _close_child() -> None:
    child = _child
    if child is not None and not child.loop.is_closed():
        child.loop.run_until_complete(child.transport.close())
        child.loop.close()


async def _open(
    cfg: BackfillConfig, processes: int, budget: Callable[[], SharedBudget] | None
) -> _Child:
    # 1/N of the concurrency; 1/N of every host's rate too, unless the shared budget that
    # every process leases from (with the hosts' whole rates) splits them
    limits = cfg.limit_settings(share=processes, split_rates=budget is None)
    transport = make_transport(cfg.http_settings(limits.global_concurrency), cfg.http_client)
    limiter = LocalLimiter(limits, budget=budget() if budget is not None else None)
    client = XrpcClient(transport, cfg.allow_private_network, limiter)
    # 1/N of the identity cache too: together the children hold what one process would
    resolver = IdentityResolver(client, cfg.plc_url, CACHE_SIZE // processes)
    fetcher = RepoFetcher(cfg, client, resolver, InlineExecutor())
    return _Child(asyncio.get_running_loop(), fetcher, limiter, transport)


def fetch_chunk(
    dids: list[str], scratch: str, opening: Opening
) -> tuple[int, list[ItemOutput], Counter[str], dict[str, dict]]:
    """In a child: the chunk's outputs (their rows in a file in `scratch`), the records
    they hold by collection, and the child's per-host counters so far. The child opens the
    job (`opening`) before its first chunk."""
    if _child is None:
        _open_child(*opening)
    child = _child
    assert child is not None
    failpoint("fetch_chunk")  # (tests: a child killed while it holds a chunk)
    counted = child.fetcher.records_by_collection
    counted.clear()  # a child works one chunk at a time: what it counts now is this chunk's
    outputs = child.loop.run_until_complete(_fetch_all(child, dids, Path(scratch)))
    outputs = _rows_to_file(outputs, Path(scratch))
    return os.getpid(), outputs, Counter(counted), child.limiter.snapshot()


async def _fetch_all(child: _Child, dids: list[str], scratch: Path) -> list[ItemOutput]:
    # all at once, as the job's own process does: the child's limiter bounds what runs
    try:
        return list(await asyncio.gather(*(child.fetcher.fetch(did, scratch) for did in dids)))
    finally:
        if child.limiter.budget is not None:
            # The child's loop stops between chunks, and with it the limiter's return of
            # idle slots: those leased from the shared budget and unspent go back now, or
            # another worker could wait a whole window for them (the last chunk's, until
            # the job ends).
            await child.limiter.close()


def _rows_to_file(outputs: list[ItemOutput], scratch: Path) -> list[ItemOutput]:
    """The in-memory rows of `outputs` sorted into one file in `scratch`, which their
    outputs share (last, one after another); the other outputs first, as they are."""
    holding = [o for o in outputs if o.rows is not None and o.rows.num_rows]
    others = [o for o in outputs if not (o.rows is not None and o.rows.num_rows)]
    if not holding:
        return others
    # DID after DID, each DID's rows in its repo's key order: (collection, rkey) for usual
    # collection names, so only the collections need sorting
    holding.sort(key=lambda o: o.result.key)
    rows = pa.concat_tables([o.rows for o in holding if o.rows is not None])
    table = sort_table_by_group(rows, SPEC)
    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / f"chunk-{os.getpid()}-{secrets.token_hex(4)}.parquet"
    columnar.write_table(table, path, spool.SEGMENT_ROW_GROUP, columnar.INTERMEDIATE)
    return others + [
        ItemOutput(o.result, None, SpilledRows(path, o.row_count, items=len(holding)))
        for o in holding
    ]

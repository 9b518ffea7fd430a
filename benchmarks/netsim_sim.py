"""The event-driven simulation behind `benchmarks/netsim.py`: a whole-network backfill on
virtual time, its decisions made by skyfill's own code.

Real (imported from `skyfill`, called as the job calls it):
- every host's limiter: `ratelimit.local.LocalLimiter` builds one `HostLimiter` per host
  (PDS, PLC directory, relay) from `LimitSettings`; a request waits until the limiter's
  `_wait_needed()` says 0 (the test `HostLimiter.acquire` makes: FIFO per host, woken
  by a release or after min(wait, 1 s), as there), is counted by `_take()`, and its answer is
  reported with `release(Observation(...))` (token bucket, server window mirrored from the
  RateLimit-* headers, probing, 429 hold, adaptive AIMD);
- the engine's task window: `JobRunner.may_open_task` (`parallel_tasks`, `max_open_tasks`)
  with `BackfillHandler.wants_more_work` (open items against those waiting on a host);
- the order in which tasks are opened: `engine.lanes.TaskLanes` when it exists (the
  per-host lanes), else the runner's plain FIFO list;
- discovery's batching (`engine.discovery.batches_of`, else its page chunking), its hosts
  listed `relays.LISTINGS_AT_ONCE` at a time in `relays.listing_order` (when it exists,
  else the relay's order), a page of `list_limit` repos per listRepos;
- retries: `RetryPolicy.delay` for the backoff between tries (`--attempts`, 429s not
  spending a try as `with_retries` does), `planner.plan_retry` for retry phases, and the
  runner's `retry_backoff * 2**(round-1)` wait before each;
- the defaults of `BackfillConfig` and `EngineSettings`.

Modelled (not skyfill's code):
- the hosts (`netsim_network`): each answers after a lognormal latency, enforces its limit
  as a fixed window and says so in RateLimit-* headers (429 beyond it), fails a share of
  requests with 500 or by hanging until the client's `--timeout`;
- a DID is a PLC look-up (cached after it succeeds, as the resolver's cache does) then a
  getRepo that holds its global slot `repo_extra` seconds past the headers (body, decode);
- the global `--concurrency` semaphore as a FIFO of slots, taken after the host's turn;
- time: an event queue (`EventClock` is the `Clock` the limiters read); storage (segments,
  commits, merges) takes no time; aggregation is not simulated;
- a fleet of W workers as one scheduler with W times the slots, the task window and
  `--host-concurrency` (each worker has its own), and one limiter per host (the shared
  budget keeps W workers to one host limit); the fleet's tasks are one queue.

Aggregation (`unit` k > 1, for speed at full scale): a simulated repo stands for k real
repos of the same host, and every count scales with it so that tasks, windows and times
stay those of the real job: host limits, `--concurrency`, `--host-concurrency` and the
batch size are divided by k, a listRepos page stands for k pages. Durations (latencies,
backoffs, timeouts, the limiter's constants) are not scaled.
"""

from __future__ import annotations

import heapq
import itertools
import math
import random
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any

from benchmarks.netsim_network import HostSpec
from skyfill.atproto.retry import RetryPolicy
from skyfill.backfill import relays
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.handler import BackfillHandler
from skyfill.clock import VIRTUAL_EPOCH
from skyfill.engine import discovery as engine_discovery
from skyfill.engine.model import GROUP_INITIAL, PHASE_BACKFILL, Batch, ItemResult, Task
from skyfill.engine.planner import plan_retry, worker_tasks
from skyfill.engine.runner import JobRunner
from skyfill.engine.settings import EngineSettings
from skyfill.errors import Outcome, RateLimited, RequestTimeout, ServerError, SkyfillError
from skyfill.ratelimit.host import HostLimiter, Observation
from skyfill.ratelimit.local import LimitSettings, LocalLimiter
from skyfill.ratelimit.spec import RateSpec, parse_rate

try:  # the per-host lanes (absent before them: the runner's FIFO is simulated)
    from skyfill.engine.lanes import TaskLanes
except ImportError:  # pragma: no cover - measuring an older checkout
    TaskLanes = None

PLC, REPO, LIST, LIST_HOSTS = 0, 1, 2, 3
PLC_HOST = "plc.sim"
RELAY_HOST = "relay.sim"
BUCKET = 300.0
"""Seconds per bucket of the throughput timeline (peak rates are per bucket)."""


class EventClock:
    """The simulation's virtual time, as the `skyfill.clock.Clock` the limiters read.
    Nothing waits on it: the event queue moves it."""

    def __init__(self, start: float = VIRTUAL_EPOCH) -> None:
        self.t = start
        self.start = start

    def now(self) -> float:
        return self.t

    def monotonic(self) -> float:
        return self.t - self.start

    async def sleep(self, seconds: float) -> None:
        raise RuntimeError("the simulation moves time itself")

    async def wait(self, event: Any, timeout: float) -> bool:
        raise RuntimeError("the simulation moves time itself")


class CountingLimiter(LocalLimiter):
    """`LocalLimiter` whose `blocked_on_hosts` is a running count kept by the simulation
    (the same number as summing every host's waiters, without the sum)."""

    blocked = 0

    def blocked_on_hosts(self, exclude: frozenset[str] = frozenset()) -> int:
        return self.blocked


@dataclass(frozen=True, kw_only=True, slots=True)
class SimSettings:
    unit: int = 1
    """Real repos per simulated repo (see the module's docstring)."""
    workers: int = 1
    """Worker processes of the fleet, each with the job's --concurrency and task window."""
    plc_rate: str = "300000/5m"
    plc_latency: float = 0.05
    repo_extra: float = 0.1
    """Seconds a getRepo holds its global slot after the headers (body, decode)."""
    seed: int = 17
    concurrency: int | None = None
    """--concurrency per worker (default: BackfillConfig's)."""


@dataclass(slots=True)
class SimHost:
    index: int
    name: str
    spec: RateSpec
    limiter: HostLimiter
    latency: float
    fail_5xx: float = 0.0
    fail_hang: float = 0.0
    repos: int = 0
    """Real repos."""
    dids: int = 0
    """Simulated repos."""
    first_item: int = 0
    identity: bool = False
    headers: bool = True
    queue: deque = field(default_factory=deque)
    wake_at: float | None = None
    win_end: float = 0.0
    win_count: int = 0
    rng: random.Random = field(default_factory=random.Random)
    listed: int = 0
    listing_failed: bool = False
    ok: int = 0
    failed: int = 0
    finished_at: float | None = None
    tags: list[str] = field(default_factory=list)


class Call:
    __slots__ = ("host", "item", "kind", "latency", "owner", "queued", "status")

    def __init__(self, host: SimHost, item: int, kind: int, owner: Any = None) -> None:
        self.host = host
        self.item = item
        self.kind = kind
        self.owner = owner
        self.queued = 0.0
        self.status: int | None = None
        self.latency = 0.0


class SimTask:
    __slots__ = ("items", "lane", "remaining", "task")

    def __init__(self, task: Task, items: list[int], lane: str | None) -> None:
        self.task = task
        self.items = items
        self.lane = lane
        self.remaining = len(items)


@dataclass(slots=True)
class Result:
    wall: float
    hosts: list[SimHost]
    requests: dict[str, int]
    throughput: list[int]
    """Repos finished per BUCKET seconds (real repos)."""
    max_in_flight: int
    left_out: int
    failed: int
    phases: int
    phase_ends: list[float]
    """Seconds from the start when each phase (backfill, retry_1, ...) ended."""
    events: int
    unit: int
    workers: int
    plc: SimHost
    settings: SimSettings
    config: BackfillConfig
    engine: EngineSettings

    def finished(self, host: SimHost) -> float:
        """Seconds from the start until `host`'s last repo had its outcome."""
        return (host.finished_at or VIRTUAL_EPOCH) - VIRTUAL_EPOCH

    @property
    def repos(self) -> int:
        return sum(h.repos for h in self.hosts)

    def floor(self) -> tuple[float, SimHost]:
        """The floor the limits impose: the slowest host's repos ÷ its rate (real units)."""
        host = max(self.hosts, key=lambda h: h.repos / (h.spec.per_second * self.unit))
        return host.repos / (host.spec.per_second * self.unit), host


class Simulation:
    def __init__(self, network: list[HostSpec], settings: SimSettings) -> None:
        self.settings = settings
        k = settings.unit
        random.seed(settings.seed)  # RetryPolicy.delay's jitter
        self.clock = EventClock()
        config = BackfillConfig(job_id="netsim", from_relays=[f"http://{RELAY_HOST}"])
        self.config = config
        self.engine = EngineSettings()
        concurrency = settings.concurrency or config.concurrency
        self.global_slots = max(1, settings.workers * concurrency // k)
        self.batch_size = max(1, round(config.batch_size / k))
        self.page = config.list_limit
        rates = {h.name: _scaled(h.rate, k) for h in network}
        rates[PLC_HOST] = _scaled(settings.plc_rate, k)
        self.limiter = CountingLimiter(
            LimitSettings(
                default_rate=_scaled(config.rate_limit, k),
                host_rates=rates,
                host_concurrency=max(1, settings.workers * config.host_concurrency // k),
                global_concurrency=self.global_slots,
                adaptive=config.adaptive,
            ),
            clock=self.clock,
        )
        self.handler = BackfillHandler(config)
        self.handler.limiter = self.limiter
        self.handler._identity_hosts = frozenset({PLC_HOST})
        # wants_more_work compares the items that progress with the fleet's slots
        self.handler.config = replace(config, concurrency=self.global_slots)
        self.runner_self = SimpleNamespace(
            settings=EngineSettings(
                parallel_tasks=self.engine.parallel_tasks * settings.workers,
                max_open_tasks=self.engine.max_open_tasks * settings.workers,
            ),
            handler=self.handler,
        )
        self.retry = RetryPolicy(
            attempts=config.attempts,
            base_seconds=config.retry_base_seconds,
            max_seconds=config.backoff_max,
        )
        self.hosts = [self._host(i, spec) for i, spec in enumerate(network)]
        self.plc = self._service(PLC_HOST, settings.plc_latency)
        self.relay = self._service(RELAY_HOST, 0.2)
        total = 0
        for host in self.hosts:
            host.first_item = total
            total += host.dids
        self.item_host = [0] * total
        for host in self.hosts:
            self.item_host[host.first_item : host.first_item + host.dids] = [host.index] * host.dids
        self.spent = bytearray(total)
        self.throttled = bytearray(total)
        self.ident = bytearray(total)
        self.item_task: list[SimTask | None] = [None] * total
        self.failures: list[int] = []
        self.heap: list[tuple[float, int, Callable[[Any], None], Any]] = []
        self.seq = itertools.count()
        self.free = self.global_slots
        self.global_queue: deque[Call] = deque()
        self.in_flight = 0
        self.max_in_flight = 0
        self.requests = {"plc": 0, "getRepo": 0, "listRepos": 0, "listHosts": 0}
        self.throughput: list[int] = []
        self.waiting: Any = TaskLanes() if TaskLanes is not None else deque()
        self.running = 0
        self.tick_at: float | None = None
        self.dirty = False
        self.discovering = True
        self.round = 0
        self.phases = 1
        self.phase_ends: list[float] = []
        self.done_at = 0.0
        self.events = 0

    # -- setup -----------------------------------------------------------------------

    def _host(self, index: int, spec: HostSpec) -> SimHost:
        k = self.settings.unit
        return SimHost(
            index=index,
            name=spec.name,
            spec=_scaled(spec.rate, k),
            limiter=self.limiter.host(spec.name),
            latency=spec.latency,
            fail_5xx=spec.fail_5xx,
            fail_hang=spec.fail_hang,
            repos=spec.repos,
            dids=math.ceil(spec.repos / k),
            rng=random.Random(f"{self.settings.seed}/{spec.name}"),
            tags=list(spec.tags),
        )

    def _service(self, name: str, latency: float) -> SimHost:
        limiter = self.limiter.host(name)
        return SimHost(
            index=-1,
            name=name,
            spec=limiter.spec,
            limiter=limiter,
            latency=latency,
            identity=name == PLC_HOST,
            headers=False,
            rng=random.Random(f"{self.settings.seed}/{name}"),
        )

    # -- the event loop --------------------------------------------------------------

    def at(self, when: float, action: Callable[[Any], None], arg: Any = None) -> None:
        heapq.heappush(self.heap, (when, next(self.seq), action, arg))

    def run(self) -> Result:
        self._list_relay(0)
        heap, clock = self.heap, self.clock
        while heap:
            when, _, action, arg = heapq.heappop(heap)
            clock.t = when
            self.events += 1
            action(arg)
        return self._result()

    # -- requests: host turn, global slot, server, answer ------------------------------

    def submit(self, call: Call) -> None:
        host = call.host
        call.queued = self.clock.t
        host.queue.append(call)
        host.limiter.waiting += 1
        if not host.identity:
            self.limiter.blocked += 1
        self.pump(host)

    def pump(self, host: SimHost) -> None:
        limiter, queue = host.limiter, host.queue
        while queue:
            wait = limiter._wait_needed()
            if wait > 0:
                # a wait too short to move a float this large must still move time
                when = max(self.clock.t + min(wait, 1.0), math.nextafter(self.clock.t, math.inf))
                if host.wake_at is None or when < host.wake_at:
                    host.wake_at = when
                    self.at(when, self._wake, host)
                return
            limiter._take()
            call = queue.popleft()
            limiter.waiting -= 1
            limiter.stats.wait_seconds += self.clock.t - call.queued
            if not host.identity:
                self.limiter.blocked -= 1
            self.dirty = True
            if self.free:
                self.free -= 1
                self._send(call)
            else:
                self.global_queue.append(call)

    def _wake(self, host: SimHost) -> None:
        if host.wake_at is not None and host.wake_at > self.clock.t:
            return  # a later wake-up was replaced by an earlier one, which ran
        host.wake_at = None
        self.pump(host)

    def _send(self, call: Call) -> None:
        host, now = call.host, self.clock.t
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        rng = host.rng
        if now >= host.win_end:
            host.win_end, host.win_count = now + host.spec.window, 0
        latency = host.latency * rng.lognormvariate(0.0, 0.4)
        hold = latency
        if host.headers and host.win_count >= host.spec.requests:
            call.status = 429
        else:
            host.win_count += 1
            draw = rng.random()
            if draw < host.fail_hang:
                call.status, latency = None, self.config.read_timeout
                hold = latency
            elif draw < host.fail_hang + host.fail_5xx:
                call.status = 500
            else:
                call.status = 200
                if call.kind == REPO:
                    hold += self.settings.repo_extra
        call.latency = latency
        self.at(now + hold, self._answer, call)

    def _answer(self, call: Call) -> None:
        host = call.host
        self.in_flight -= 1
        if self.global_queue:
            self._send(self.global_queue.popleft())
        else:
            self.free += 1
        if host.headers and call.status is not None:
            left = max(0, host.spec.requests - host.win_count)
            retry_after = host.win_end - self.clock.t if call.status == 429 else None
            seen = Observation(
                call.status,
                call.latency,
                host.spec.requests,
                left,
                math.ceil(host.win_end),
                retry_after,
                host.spec.window,
            )
        else:
            seen = Observation(call.status, call.latency)
        host.limiter.release(seen)
        self.pump(host)
        kind = call.kind
        if kind in (PLC, REPO):
            self.requests["plc" if kind == PLC else "getRepo"] += self.settings.unit
        else:  # a listing page stands for as many real pages as its repos fill
            self.requests["listHosts" if kind == LIST_HOSTS else "listRepos"] += 1
        if kind in (PLC, REPO):
            self._item_answer(call)
        else:
            call.owner(call)

    # -- one DID: RepoFetcher.fetch under with_retries --------------------------------

    def _try_item(self, item: int) -> None:
        self.spent[item] += 1
        if self.ident[item]:
            self.submit(Call(self.hosts[self.item_host[item]], item, REPO))
        else:
            self.submit(Call(self.plc, item, PLC))

    def _item_answer(self, call: Call) -> None:
        item, status = call.item, call.status
        if status == 200:
            if call.kind == PLC:
                self.ident[item] = 1
                self.submit(Call(self.hosts[self.item_host[item]], item, REPO))
            else:
                self._item_done(item, True)
            return
        error = _error(status)
        if isinstance(error, RateLimited) and self.throttled[item] < self.retry.max_throttled:
            self.throttled[item] += 1
            self.spent[item] -= 1
            self._try_item(item)
            return
        if self.spent[item] >= self.retry.attempts:
            self._item_done(item, False)
            return
        self.at(self.clock.t + self.retry.delay(self.spent[item], error), self._try_item, item)

    def _item_done(self, item: int, ok: bool) -> None:
        host = self.hosts[self.item_host[item]]
        k = self.settings.unit
        if ok:
            host.ok += 1
        else:
            host.failed += 1
            self.failures.append(item)
        host.finished_at = self.clock.t
        bucket = int(self.clock.monotonic() // BUCKET)
        while len(self.throughput) <= bucket:
            self.throughput.append(0)
        self.throughput[bucket] += k
        self.handler._open_items -= 1
        self.dirty = True
        task = self.item_task[item]
        assert task is not None
        task.remaining -= 1
        if task.remaining == 0:
            self._task_done(task)

    # -- the runner: opening tasks ---------------------------------------------------

    def add_tasks(self, tasks: list[SimTask]) -> None:
        waiting = self.waiting
        for task in tasks:
            if isinstance(waiting, deque):
                waiting.append(task)
            else:
                waiting.add(task, task.lane)
        self.open_tasks()

    def open_tasks(self) -> None:
        waiting = self.waiting
        may_open = JobRunner.may_open_task  # the runner's own rule, on the fleet's settings
        while len(waiting) and may_open(self.runner_self, self.running):  # type: ignore[arg-type]
            if isinstance(waiting, deque):
                task = waiting.popleft()
            elif (picked := waiting.pop()) is not None:
                task = picked[0]
            else:
                break
            self._open(task)
        self._schedule_tick()

    def _schedule_tick(self) -> None:
        """The runner looks again every 0.2 s while it might open more (its wait's timeout)."""
        settings = self.runner_self.settings
        wants = settings.parallel_tasks <= self.running < settings.max_open_tasks
        if self.tick_at is None and len(self.waiting) and wants:
            self.tick_at = self.clock.t + 0.2
            self.at(self.tick_at, self._tick)

    def _tick(self, _: Any = None) -> None:
        self.tick_at = None
        if self.dirty:
            self.dirty = False
            self.open_tasks()
        else:
            self._schedule_tick()

    def _open(self, task: SimTask) -> None:
        self.running += 1
        self.handler._open_items += len(task.items)
        for item in task.items:
            self.item_task[item] = task
            self._try_item(item)

    def _task_done(self, task: SimTask) -> None:
        self.running -= 1
        if not isinstance(self.waiting, deque):
            self.waiting.done(task.lane)
        self.done_at = self.clock.t
        self.open_tasks()
        if not self.running and not len(self.waiting) and not self.discovering:
            self._phase_done()

    # -- phases ------------------------------------------------------------------------

    def _phase_done(self) -> None:
        self.phase_ends.append(self.clock.monotonic())
        failures, self.failures = self.failures, []
        self.round += 1
        if not failures or self.round > self.engine.retries:
            return
        results = [
            (ItemResult(str(i), Outcome.FAILED, error_class="server_error"), None) for i in failures
        ]
        plan = plan_retry(results, self.round, self.batch_size)
        backoff = self.engine.retry_backoff * 2 ** (self.round - 1)
        self.phases += 1
        for item in failures:
            self.spent[item] = 0
            host = self.hosts[self.item_host[item]]
            host.failed -= 1
        tasks = [
            SimTask(task, [int(key) for key in batch.items], None)
            for batch, task in zip(plan.batches, plan.tasks, strict=True)
        ]
        self.at(self.clock.t + backoff, self.add_tasks, tasks)

    # -- discovery: the relay's hosts, then each host's repos --------------------------

    def _list_relay(self, page: int) -> None:
        pages = math.ceil(len(self.hosts) / self.page)
        if page >= pages:
            self._start_listings()
            return
        call = Call(self.relay, page, LIST_HOSTS, owner=self._relay_answer)
        self.submit(call)

    def _relay_answer(self, call: Call) -> None:
        self._list_relay(call.item + (1 if call.status == 200 else 0))

    def _start_listings(self) -> None:
        order = list(self.hosts)
        ordering = getattr(relays, "listing_order", None)
        if ordering is not None:
            counts = {h.name: h.repos for h in self.hosts}
            order = ordering(order, lambda h: counts[h.name])
        self.to_list = deque(order)
        self.listings = 0
        for _ in range(min(relays.LISTINGS_AT_ONCE, len(self.to_list))):
            self._next_listing()

    def _next_listing(self) -> None:
        if not self.to_list:
            if self.listings == 0:
                self.discovering = False
                if not self.running and not len(self.waiting):
                    self._phase_done()
            return
        host = self.to_list.popleft()
        self.listings += 1
        self._list_page(_Listing(host))

    def _list_page(self, listing: _Listing) -> None:
        listing.tries += 1
        self.submit(Call(listing.host, -1, LIST, owner=lambda call: self._page(listing, call)))

    def _page(self, listing: _Listing, call: Call) -> None:
        host = listing.host
        if call.status != 200:
            error = _error(call.status)
            if isinstance(error, RateLimited) and listing.throttled < self.retry.max_throttled:
                listing.throttled += 1
                listing.tries -= 1
                self._list_page(listing)
            elif listing.tries >= self.retry.attempts:
                host.listing_failed = True
                self._listing_done()
            else:
                delay = self.retry.delay(listing.tries, error)
                self.at(self.clock.t + delay, self._list_page, listing)
            return
        listing.tries = 0
        count = min(self.page, host.dids - host.listed)
        real = min(count * self.settings.unit, host.repos - host.listed * self.settings.unit)
        self.requests["listRepos"] += max(0, math.ceil(real / self.config.list_limit) - 1)
        start = host.first_item + host.listed
        host.listed += count
        self.add_tasks(self._tasks(list(range(start, start + count)), host.name))
        if host.listed < host.dids:
            self._list_page(listing)
        else:
            self._listing_done()

    def _listing_done(self) -> None:
        self.listings -= 1
        self._next_listing()

    def _tasks(self, items: list[int], lane: str) -> list[SimTask]:
        chunks = engine_discovery._chunks(items, self.batch_size)  # DiscoveryContext._add's
        batches = [
            Batch(f"{lane}-{items[0]}-batch-{i:04d}", PHASE_BACKFILL, GROUP_INITIAL, tuple(c))
            for i, c in enumerate(chunks)
        ]
        return [
            SimTask(task, list(batch.items), lane)
            for batch, task in zip(batches, worker_tasks(batches), strict=True)
        ]

    def _result(self) -> Result:
        left_out = sum(h.dids - h.listed for h in self.hosts) * self.settings.unit
        failed = sum(h.failed for h in self.hosts) * self.settings.unit
        return Result(
            wall=self.done_at - self.clock.start,
            hosts=self.hosts,
            requests=dict(self.requests),
            throughput=self.throughput,
            max_in_flight=self.max_in_flight * self.settings.unit,
            left_out=left_out,
            failed=failed,
            phases=self.phases,
            phase_ends=self.phase_ends,
            events=self.events,
            unit=self.settings.unit,
            workers=self.settings.workers,
            plc=self.plc,
            settings=self.settings,
            config=self.config,
            engine=self.engine,
        )


class _Listing:
    __slots__ = ("host", "throttled", "tries")

    def __init__(self, host: SimHost) -> None:
        self.host = host
        self.tries = 0
        self.throttled = 0


def _scaled(rate: str, unit: int) -> RateSpec:
    spec = parse_rate(rate)
    return RateSpec(max(1, round(spec.requests / unit)), spec.window)


def _error(status: int | None) -> SkyfillError:
    if status == 429:
        return RateLimited("429")
    if status is None:
        return RequestTimeout("timeout")
    return ServerError(f"{status}")

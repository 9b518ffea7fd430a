"""Discovery: jobs whose items are found while they run (e.g. listing a host's repos).

A handler that discovers (`Discoverer`, `discovers()` true) has `discover(ctx)` called
once per job, beside the backfill phase's tasks, by one runner or worker node at a time.
It hands the engine pages of items with `await ctx.add(...)`, then saves its position
with `await ctx.save(...)`. The engine adds the page's new items to the job atomically, as new
batches and tasks of the backfill phase; on Redis they are queued for the workers at once.
The phase ends only when discovery has finished and every task is done.

Crash safety: a page's items are added before its position is saved. After a crash,
`ctx.position()` gives back the last saved position. Items of a page that is listed again
are known already and skipped, so nothing is lost and nothing is added twice.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

from skyfill.engine.layout import JobLayout
from skyfill.engine.manifest import write_batch_files
from skyfill.engine.model import GROUP_INITIAL, PHASE_BACKFILL, Batch, ItemResult, Task
from skyfill.engine.planner import worker_tasks
from skyfill.engine.state.base import StateStore

STATS_NAME = "discovery"
DISCOVERY_TASK = "discovery"
"""The task id under which the outcomes discovery itself knows (inactive repos) are kept."""


class DiscoveryContext:
    def __init__(
        self,
        layout: JobLayout,
        store: StateStore,
        batch_size: int,
        lanes: dict[str, str] | None = None,
        added: deque[Task] | None = None,
    ) -> None:
        self.layout = layout
        self.store = store
        self.batch_size = batch_size
        self.lanes = lanes
        """Where the runner of this process reads each added batch's lane (engine.lanes),
        by batch id; None: nobody asks (a lane only orders the tasks of this run)."""
        self.added = added
        """Where the runner of this process takes the tasks added (once they are in the
        store), instead of reading every task of the phase again; None: nobody takes them."""
        self._updating = asyncio.Lock()

    def position(self) -> dict[str, Any]:
        """What the handler saved last (empty on a fresh job)."""
        return dict(discovery_state(self.store).get("position", {}))

    async def add(
        self, items: Sequence[str], outcomes: Sequence[ItemResult] = (), lane: str | None = None
    ) -> int:
        """Add the items the job does not have yet; `outcomes` are known final outcomes of
        some of them (e.g. a deactivated repo), recorded at once and never fetched.
        `lane`: what limits these items together (their host): the runner keeps only a
        few tasks of one lane open at once (engine.lanes). Returns how many items were
        new. (The store is written in a thread.)"""
        return await asyncio.to_thread(self._add, items, outcomes, lane)

    def _add(
        self, items: Sequence[str], outcomes: Sequence[ItemResult], lane: str | None = None
    ) -> int:
        unique = list(dict.fromkeys(items))
        known = self.store.known_items(unique)
        new = [item for item in unique if item not in known]
        if not new:
            return 0
        tag = f"d{int(time.time())}{secrets.token_hex(3)}"
        batches = [
            Batch(f"{tag}-batch-{i:04d}", PHASE_BACKFILL, GROUP_INITIAL, tuple(chunk))
            for i, chunk in enumerate(_chunks(new, self.batch_size))
        ]
        write_batch_files(self.layout, batches)
        if lane is not None and self.lanes is not None:
            self.lanes.update((batch.batch_id, lane) for batch in batches)  # before the tasks
        tasks = worker_tasks(batches)
        self.store.add_items(batches, tasks)
        if self.added is not None:
            self.added.extend(tasks)
        fresh = set(new)
        settled = [o for o in outcomes if o.key in fresh]
        if settled:
            self.store.commit_items(DISCOVERY_TASK, settled, [0] * len(settled), None)
        return len(new)

    async def save(self, position: dict[str, Any], **facts: Any) -> None:
        """Record the position reached (after the items before it were added)."""
        await asyncio.to_thread(self._save, position, facts)

    async def update(self, change: Callable[[dict[str, Any]], None], **facts: Any) -> None:
        """Change the saved position in place (`change(position)`) and save it, one update
        at a time: parts of the position kept side by side (one entry per host listed at
        once) never overwrite each other's progress."""
        async with self._updating:
            await asyncio.to_thread(self._update, change, facts)

    def _update(self, change: Callable[[dict[str, Any]], None], facts: dict[str, Any]) -> None:
        position = self.position()
        change(position)
        self._save(position, facts)

    def _save(self, position: dict[str, Any], facts: dict[str, Any]) -> None:
        state = discovery_state(self.store)
        state.update(facts, position=position, saved_at=time.time())
        self.store.put_stats(STATS_NAME, state)


@runtime_checkable
class Discoverer(Protocol):
    def discovers(self) -> bool:
        """Whether this job finds (some of) its items while it runs."""
        ...

    async def discover(self, ctx: DiscoveryContext) -> None:
        """Find items and hand them over with `ctx.add`, saving the position after each
        page; return when there is nothing more to find."""
        ...


def discovers(handler: object) -> bool:
    return isinstance(handler, Discoverer) and handler.discovers()


def discovery_state(store: StateStore) -> dict[str, Any]:
    return store.get_stats(STATS_NAME)


def discovery_pending(handler: object, store: StateStore, phase: str) -> bool:
    """Whether the job still has items to discover (only ever in the backfill phase)."""
    return (
        phase == PHASE_BACKFILL
        and discovers(handler)
        and not discovery_state(store).get("done", False)
    )


async def run_discovery(handler: Discoverer, ctx: DiscoveryContext) -> None:
    await handler.discover(ctx)
    await asyncio.to_thread(_mark_done, ctx.store)


def _mark_done(store: StateStore) -> None:
    state = discovery_state(store)
    state.update(done=True, finished_at=time.time())
    store.put_stats(STATS_NAME, state)


def _chunks(items: list[str], size: int) -> list[list[str]]:
    return [items[i : i + size] for i in range(0, len(items), size)]

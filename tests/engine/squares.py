"""A second, tiny job type: proves a job type is one handler plus one JobDefinition YAML."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyfill.engine.handler import AggregateContext, Plan
from skyfill.engine.model import Batch, ItemOutput, ItemResult

SCHEMA = pa.schema([("n", pa.int64()), ("i", pa.int64()), ("square", pa.int64())])


class SquaresHandler:
    """Item "n" produces n rows (i, i*i); multiples of 7 fail terminally."""

    job_type = "squares"
    output_schema = SCHEMA
    dedup_key = ("n", "i")
    newest_column = "square"

    def __init__(
        self, count: int, stop_after: int | None = None, stop: asyncio.Event | None = None
    ) -> None:
        self.count = count
        self.processed: list[str] = []
        self._stop_after, self._stop = stop_after, stop

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> SquaresHandler:
        return cls(int(config["count"]))

    def config_dict(self) -> dict[str, Any]:
        return {"count": self.count, "batch_size": 5, "parallel_tasks": 2, "flush_items": 2}

    def plan(self) -> Plan:
        return Plan(items=[str(i) for i in range(1, self.count + 1)])

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def process(self, batch: Batch, items: list[str]) -> AsyncIterator[ItemOutput]:
        for item in items:
            await asyncio.sleep(0)
            self.processed.append(item)
            if self._stop_after is not None and len(self.processed) >= self._stop_after:
                assert self._stop is not None
                self._stop.set()
            n = int(item)
            if n % 7 == 0:
                yield ItemOutput(ItemResult(item, "failed", "bad_luck", "sevens fail"))
                continue
            rows = pa.table(
                {"n": [n] * n, "i": list(range(n)), "square": [i * i for i in range(n)]},
                schema=SCHEMA,
            )
            yield ItemOutput(ItemResult(item, "ok", metrics={"api_requests": 1}), rows)

    def wants_more_work(self) -> bool:
        return False

    def live_stats(self) -> dict[str, Any]:
        return {"processed": len(self.processed)}

    def aggregate(self, ctx: AggregateContext) -> dict[str, Any]:
        table = ctx.rows.read_all()
        ctx.layout.output.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, ctx.layout.output / "all.parquet")
        return {"total_rows": table.num_rows}

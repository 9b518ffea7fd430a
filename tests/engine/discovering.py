"""A job type that finds most of its items while it runs (tests of engine discovery)."""

from __future__ import annotations

import asyncio
from typing import Any

from skyfill.engine.discovery import DiscoveryContext
from skyfill.engine.model import ItemResult
from tests.engine.squares import SquaresHandler

PAGE = 4


class DiscoveringSquares(SquaresHandler):
    """Squares whose items `count+1 .. count+found` are listed in pages of 4 while the job
    runs; multiples of 11 are listed as already `gone` (never processed)."""

    job_type = "discovering-squares"

    def __init__(self, count: int, found: int, stop_after_pages: int | None = None) -> None:
        super().__init__(count)
        self.found = found
        self.stop_after_pages = stop_after_pages
        self.pages_listed: list[int] = []
        self.stop: asyncio.Event | None = None
        self.found_processed_while_listing: list[str] = []

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DiscoveringSquares:
        return cls(int(config["count"]), int(config["found"]))

    def config_dict(self) -> dict[str, Any]:
        return {**super().config_dict(), "found": self.found}

    def discovers(self) -> bool:
        return self.found > 0

    async def discover(self, ctx: DiscoveryContext) -> None:
        start = int(ctx.position().get("next", self.count + 1))
        end = self.count + self.found
        for first in range(start, end + 1, PAGE):
            await asyncio.sleep(0.1)  # a page takes a while: tasks run meanwhile
            self.pages_listed.append(first)
            page = [str(n) for n in range(first, min(first + PAGE, end + 1))]
            gone = [ItemResult(n, "gone") for n in page if int(n) % 11 == 0]
            await ctx.add(page, gone)
            await ctx.save({"next": first + PAGE}, pages=len(self.pages_listed))
            self.found_processed_while_listing = [p for p in self.processed if int(p) > self.count]
            if self.stop_after_pages and len(self.pages_listed) >= self.stop_after_pages:
                assert self.stop is not None
                self.stop.set()
                await asyncio.sleep(3600)  # stopped from outside, like a killed process

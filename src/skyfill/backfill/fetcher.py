"""One DID end to end: resolve, fetch the CAR, decode it; every failure becomes a result."""

from __future__ import annotations

import asyncio
import random
import time

from skyfill.atproto.identity import IdentityResolver
from skyfill.atproto.xrpc import RequestStats, XrpcClient, current_stats
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.decode import DecodedRepo, decode_to_table
from skyfill.engine.executor.base import Executor
from skyfill.engine.model import ItemOutput, ItemResult
from skyfill.errors import SkyfillError, TransientError, classify

MAX_BACKOFF_SECONDS = 60.0


class RepoFetcher:
    def __init__(
        self,
        config: BackfillConfig,
        client: XrpcClient,
        resolver: IdentityResolver,
        executor: Executor,
    ) -> None:
        self._config = config
        self._client = client
        self._resolver = resolver
        self._executor = executor

    async def fetch(self, did: str) -> ItemOutput:
        """Fetch and decode one DID's repo, retrying transient failures with backoff."""
        data: dict = {"handle": None, "pds": None}
        stats = RequestStats()
        current_stats.set(stats)  # this coroutine runs in its own task: its own context
        attempt = 0
        while True:
            attempt += 1
            try:
                decoded, car_bytes = await self._fetch_once(did, data)
            except Exception as exc:  # every failure ends as this DID's result
                error = classify(exc)
                if error.retryable and attempt < self._config.attempts:
                    await asyncio.sleep(self._backoff(attempt, error))
                    continue
                output = self._failure(did, error, attempt, data)
            else:
                output = self._success(did, decoded, car_bytes, attempt, data)
            output.result.metrics = {"api_requests": stats.requests, "bytes": stats.bytes_received}
            return output

    async def _fetch_once(self, did: str, data: dict) -> tuple[DecodedRepo, int]:
        identity = await self._resolver.resolve(did)
        data["handle"], data["pds"] = identity.handle, identity.pds
        car = await self._client.get_repo(identity.pds, did, self._config.max_repo_bytes)
        cfg = self._config
        if len(car) <= cfg.inline_decode_bytes:
            decoded = decode_to_table(car, did, cfg.job_id, cfg.since)
        else:
            decoded = await self._executor.run(decode_to_table, car, did, cfg.job_id, cfg.since)
        return decoded, len(car)

    def _backoff(self, attempt: int, error: SkyfillError) -> float:
        if isinstance(error, TransientError) and error.retry_after is not None:
            return min(error.retry_after, MAX_BACKOFF_SECONDS)
        base = self._config.retry_base_seconds * 2 ** (attempt - 1)
        return min(base, MAX_BACKOFF_SECONDS) * random.uniform(0.5, 1.0)

    def _success(
        self, did: str, decoded: DecodedRepo, car_bytes: int, attempt: int, data: dict
    ) -> ItemOutput:
        data.update(
            rev=decoded.rev,
            commit_cid=decoded.commit_cid,
            record_count=decoded.record_count,
            car_bytes=car_bytes,
            fetched_at=time.time(),
        )
        return ItemOutput(ItemResult(did, "ok", attempts=attempt, data=data), decoded.table)

    def _failure(self, did: str, error: SkyfillError, attempt: int, data: dict) -> ItemOutput:
        status = "failed" if error.retryable else error.outcome
        data["fetched_at"] = time.time()
        result = ItemResult(
            did,
            status,
            error_class=error.error_class,
            error=error.message,
            retryable=error.retryable,
            attempts=attempt,
            data=data,
        )
        return ItemOutput(result, None)

"""One DID end to end: resolve, fetch the CAR, decode it; every failure becomes a result."""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path

from skyfill.atproto.exceptions import RepoTooLarge
from skyfill.atproto.identity import Identity, IdentityResolver
from skyfill.atproto.identity.resolver import resolve_signing, with_current_key
from skyfill.atproto.latest_commit import get_latest_commit
from skyfill.atproto.retry import RetryPolicy, Tries, with_retries
from skyfill.atproto.xrpc import CarFile, CarSpill, RequestStats, XrpcClient, current_stats
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.decode import DecodedRepo, decode_to_table
from skyfill.backfill.previous import PreviousJob
from skyfill.backfill.streamed import decode_file
from skyfill.engine.executor.base import Executor
from skyfill.engine.model import ItemOutput, ItemResult
from skyfill.errors import Outcome, SkyfillError, classify
from skyfill.sinks.base import KEPT_STATUSES
from skyfill.telemetry.logcontext import bind

log = logging.getLogger(__name__)

DECODE_OVERHEAD = 6
"""A repo needs about this many times its CAR size in memory while it is decoded."""


MIN_REPO_BYTES = 1 << 20


def repo_size_limit(config: BackfillConfig, baseline_rss: int = 0) -> tuple[int, str]:
    """The largest CAR accepted, and the reason to give when one is refused.

    Under --max-memory a repo must fit, decoded, in the room that skyfill's own footprint
    (`baseline_rss`, measured when the workers start) leaves under the limit.
    """
    if config.max_memory is None:
        return config.max_repo_bytes, " (--max-repo-bytes)"
    room = max(config.max_memory - baseline_rss, 0)
    limit = max(room // DECODE_OVERHEAD, MIN_REPO_BYTES)
    if limit >= config.max_repo_bytes:
        return config.max_repo_bytes, " (--max-repo-bytes)"
    return limit, (
        f" (--max-memory {config.max_memory} bytes leaves {room} bytes beside skyfill's own "
        f"{baseline_rss}; decoding a repo needs ~{DECODE_OVERHEAD}x its size)"
    )


class Unchanged(Exception):
    """The repo's latest commit is the one the previous job fetched (not an error)."""

    def __init__(self, prior: dict) -> None:
        super().__init__(prior.get("rev"))
        self.prior = prior


class RepoFetcher:
    def __init__(
        self,
        config: BackfillConfig,
        client: XrpcClient,
        resolver: IdentityResolver,
        executor: Executor,
        inline_bytes: int | None = None,
        records_by_collection: Counter[str] | None = None,
        baseline_rss: int = 0,
        previous: PreviousJob | None = None,
    ) -> None:
        self._previous = previous
        """A refresh: the job it follows (repos whose rev did not change are not fetched)."""
        self._config = config
        self._client = client
        self._resolver = resolver
        self._executor = executor
        self._inline_bytes = config.inline_decode_bytes if inline_bytes is None else inline_bytes
        """CARs up to this size are decoded on the event loop (cheaper than handing over)."""
        self.records_by_collection: Counter[str] = (
            Counter() if records_by_collection is None else records_by_collection
        )
        """Records decoded, per collection (the caller's counter when it gives one)."""
        self._max_bytes, self._size_reason = repo_size_limit(config, baseline_rss)
        self._retry = RetryPolicy(
            attempts=config.attempts,
            base_seconds=config.retry_base_seconds,
            max_seconds=config.backoff_max,
        )

    async def fetch(self, did: str, scratch: Path | None = None) -> ItemOutput:
        """Fetch and decode one DID's repo, retrying transient failures with backoff.

        With `scratch` (the task's directory for files), a repo over `--stream-repo-bytes`
        goes to a file and is decoded in batches, its rows to a file there."""
        data: dict = {"handle": None, "pds": None}
        stats = RequestStats()
        current_stats.set(stats)  # this coroutine runs in its own task: its own context
        bind(did=did)
        tries = Tries()
        try:
            decoded, car_bytes = await with_retries(
                lambda: self._fetch_once(did, data, scratch),
                self._retry,
                did,
                event="did_retry",
                tries=tries,
            )
        except Unchanged as same:
            output = self._unchanged(did, same.prior, tries.spent, data)
        except Exception as exc:  # every failure ends as this DID's result
            output = self._failure(did, classify(exc), tries.spent, data)
        else:
            output = self._success(did, decoded, car_bytes, tries.spent, data)
        output.result.metrics = {
            "dids_processed": 1,
            "records": output.row_count,
            "api_requests": stats.requests,
            "bytes": stats.bytes_received,
            "rate_limited": stats.rate_limited,
            "wait_seconds": round(stats.wait_seconds, 3),
        }
        if output.spilled is not None:
            output.result.metrics["spilled_batches"] = output.spilled.parts
        _log_outcome(output.result, data.get("pds"))
        return output

    async def _fetch_once(
        self, did: str, data: dict, scratch: Path | None
    ) -> tuple[DecodedRepo, int]:
        identity = await self._identity(did)
        data["handle"], data["pds"] = identity.handle, identity.pds
        prior = self._previous.ok_repo(did) if self._previous is not None else None
        if prior is not None and prior.get("pds") == identity.pds:
            latest = await get_latest_commit(self._client, identity.pds, did)
            if latest.rev == prior["rev"]:
                raise Unchanged(prior)

        async def decode(car: bytes | CarFile) -> tuple[DecodedRepo, int]:
            return await self._decode_verified(car, identity, scratch), len(car)

        spill = CarSpill(scratch, self._config.stream_repo_bytes) if scratch else None
        try:
            return await self._client.get_repo(
                identity.pds, did, self._max_bytes, then=decode, spill=spill
            )
        except RepoTooLarge as exc:
            raise RepoTooLarge(f"{exc.message}{self._size_reason}") from None

    async def _identity(self, did: str) -> Identity:
        """The DID's identity; when signatures are verified it must name a signing key."""
        if self._config.verify_signatures:
            return await resolve_signing(self._resolver, did)
        return await self._resolver.resolve(did)

    async def _decode_verified(
        self, car: bytes | CarFile, identity: Identity, scratch: Path | None
    ) -> DecodedRepo:
        """Decode, verifying the commit's signature (with the key the directory gives now
        if the cached one fails: keys rotate)."""
        if not self._config.verify_signatures:
            return await self._decode(car, identity.did, None, scratch)
        _, decoded = await with_current_key(
            self._resolver, identity, lambda key: self._decode(car, identity.did, key, scratch)
        )
        return decoded

    async def _decode(
        self, car: bytes | CarFile, did: str, signing_key: str | None, scratch: Path | None
    ) -> DecodedRepo:
        cfg = self._config
        if isinstance(car, CarFile):
            assert scratch is not None  # (a CAR goes to a file only with a scratch directory)
            return await self._executor.run(
                decode_file,
                str(car.path),
                did,
                cfg.job_id,
                cfg.since,
                cfg.collections,
                signing_key,
                str(scratch),
            )
        args = (car, did, cfg.job_id, cfg.since, cfg.collections, signing_key)
        if len(car) <= self._inline_bytes:
            return decode_to_table(*args)
        return await self._executor.run(decode_to_table, *args)

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
        self.records_by_collection.update(decoded.by_collection())
        result = ItemResult(did, Outcome.OK, attempts=attempt, data=data)
        if decoded.spilled is not None:
            return ItemOutput(result, None, decoded.spilled)
        return ItemOutput(result, decoded.table)

    def _unchanged(self, did: str, prior: dict, attempt: int, data: dict) -> ItemOutput:
        """Same rev as in the previous job: its facts stand, its rows are carried over."""
        facts = {**prior, **data, "unchanged": True, "checked_at": time.time()}
        facts["fetched_at"] = prior.get("fetched_at")
        for name in ("rev", "commit_cid", "record_count", "car_bytes"):
            facts[name] = prior.get(name)
        return ItemOutput(ItemResult(did, Outcome.OK, attempts=attempt, data=facts), None)

    def _failure(self, did: str, error: SkyfillError, attempt: int, data: dict) -> ItemOutput:
        status = Outcome.FAILED if error.retryable else error.outcome
        data["fetched_at"] = time.time()
        prior = self._previous.ok_repo(did) if self._previous is not None else None
        if prior is not None and status in KEPT_STATUSES:
            # a refresh read nothing trustworthy (e.g. a bad signature): the rows and facts
            # of the previous job stand, and the error is recorded beside them
            for name in ("rev", "commit_cid", "record_count", "car_bytes"):
                data[name] = prior.get(name)
            data["kept_previous"] = True
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


def _log_outcome(result: ItemResult, pds: str | None) -> None:
    """One debug record per DID: `did_done`, or `did_failed` when it ended failed (at info
    a million failures would be a million lines; the summary groups them)."""
    if log.isEnabledFor(logging.DEBUG):
        log.debug(
            "%s%s",
            result.status,
            f": {result.error}" if result.error else "",
            extra={
                "event": "did_failed" if result.status == Outcome.FAILED else "did_done",
                "status": result.status,
                "attempts": result.attempts,
                "records": result.metrics.get("records", 0),
                "host": pds,
            },
        )

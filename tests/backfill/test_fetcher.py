"""RepoFetcher.fetch: one DID's tries, made by the shared retry loop, end in its result."""

from __future__ import annotations

import logging

import pyarrow as pa
import pytest

from skyfill.atproto.crypto import Curve, Keypair
from skyfill.atproto.exceptions import RepoNotFound
from skyfill.atproto.identity.base import Identity
from skyfill.atproto.latest_commit import LatestCommit
from skyfill.backfill.config import BackfillConfig
from skyfill.backfill.decode import DecodedRepo
from skyfill.backfill.fetcher import RepoFetcher
from skyfill.errors import RateLimited, ServerError

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
PDS = "https://pds.example"
REV = "3kabcdefghij2"
KEY = Keypair.from_seed(Curve.K256, "alice").did_key
CONFIG = BackfillConfig(
    job_id="j", dids_file="dids.txt", attempts=3, retry_base_seconds=0.001, backoff_max=0.01
)


class Resolver:
    """Raises `errors` one by one, then resolves; counts its calls."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def resolve(self, did: str, *, fresh: bool = False) -> Identity:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return Identity(did, PDS, "alice.test", signing_key=KEY)


class Client:
    """getRepo answers a decoded repo of no records (the CAR itself is not the point)."""

    async def get_repo(
        self, pds: str, did: str, max_bytes: int, then: object, spill: object = None
    ) -> tuple:
        return DecodedRepo(REV, "bafycommit", 0, pa.table({"uri": pa.array([], pa.string())})), 10


class Previous:
    """A refresh's previous job, in which DID was fetched at REV."""

    def ok_repo(self, did: str) -> dict:
        return {"rev": REV, "pds": PDS, "commit_cid": "bafyold", "fetched_at": 1.0}


async def fetch(resolver: Resolver, previous: Previous | None = None):
    fetcher = RepoFetcher(CONFIG, Client(), resolver, None, previous=previous)  # type: ignore[arg-type]
    return (await fetcher.fetch(DID)).result


@pytest.mark.parametrize(
    ("errors", "status", "attempts", "calls"),
    [
        ((), "ok", 1, 1),
        ((ServerError("a"), ServerError("b")), "ok", 3, 3),
        ((ServerError("a"),) * 3, "failed", 3, 3),  # the last try counts too
        ((RateLimited("x"),) * 4 + (ServerError("a"),), "ok", 2, 6),  # 429s are free
        ((RepoNotFound("gone"),), "not_found", 1, 1),  # terminal: at once
    ],
)
async def test_a_dids_attempts_are_the_tries_of_the_shared_loop(
    errors: tuple, status: str, attempts: int, calls: int
) -> None:
    resolver = Resolver(*errors)
    result = await fetch(resolver)
    assert (result.status, result.attempts, resolver.calls) == (status, attempts, calls)
    assert result.retryable == (status == "failed")


async def test_an_unexpected_exception_is_classified_and_terminal() -> None:
    resolver = Resolver(KeyError("pds"))
    result = await fetch(resolver)
    assert (result.status, result.error_class, result.retryable) == ("failed", "failed", False)
    assert result.error == "unexpected KeyError: 'pds'" and resolver.calls == 1


async def test_an_unchanged_repo_passes_through_the_loop_with_its_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def latest(client: object, pds: str, did: str) -> LatestCommit:
        return LatestCommit("bafynew", REV)

    monkeypatch.setattr("skyfill.backfill.fetcher.get_latest_commit", latest)
    result = await fetch(Resolver(ServerError("a")), Previous())
    assert (result.status, result.attempts, result.data["unchanged"]) == ("ok", 2, True)
    assert result.data["commit_cid"] == "bafyold"


async def test_each_retry_is_logged_as_did_retry(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.DEBUG, logger="skyfill"):
        await fetch(Resolver(ServerError("boom")))
    retries = [r for r in caplog.records if getattr(r, "event", None) == "did_retry"]
    assert len(retries) == 1 and "try 1 failed (boom)" in retries[0].getMessage()

"""RetryPolicy / with_retries: what is tried again, how often, and after how long."""

from __future__ import annotations

import pytest

from skyfill.atproto.exceptions import RepoNotFound
from skyfill.atproto.retry import RetryPolicy, Tries, with_retries
from skyfill.errors import RateLimited, ServerError

FAST = RetryPolicy(attempts=3, base_seconds=0.001, max_seconds=0.01, max_throttled=2)


def failing(*errors: Exception):
    """A call that raises `errors` one by one, then answers "ok"; counts its calls."""
    calls = []

    async def call() -> str:
        calls.append(1)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]
        return "ok"

    return call, calls


@pytest.mark.parametrize(
    ("errors", "outcome", "calls"),
    [
        ((ServerError("a"), ServerError("b")), "ok", 3),
        ((ServerError("a"),) * 3, ServerError, 3),  # attempts spent
        ((RepoNotFound("gone"),), RepoNotFound, 1),  # terminal: at once
        ((RateLimited("x"),) * 2 + (ServerError("a"),) * 2, "ok", 5),  # 429s are free
        ((RateLimited("x"),) * 5, RateLimited, 5),  # 2 free, then they spend attempts
    ],
)
async def test_with_retries(errors: tuple, outcome: object, calls: int) -> None:
    call, made = failing(*errors)
    if outcome == "ok":
        assert await with_retries(call, FAST, "test") == "ok"
    else:
        with pytest.raises(outcome):  # type: ignore[call-overload]
            await with_retries(call, FAST, "test")
    assert len(made) == calls


async def test_tries_are_counted_also_when_the_call_finally_raises() -> None:
    call, _ = failing(RateLimited("x"), ServerError("a"), ServerError("b"), ServerError("c"))
    tries = Tries()
    with pytest.raises(ServerError, match="c"):
        await with_retries(call, FAST, "test", tries=tries)
    assert (tries.spent, tries.throttled) == (3, 1)


async def test_an_exception_that_is_no_skyfill_error_passes_through_at_once() -> None:
    call, made = failing(KeyError("x"))
    tries = Tries()
    with pytest.raises(KeyError):
        await with_retries(call, FAST, "test", tries=tries)
    assert len(made) == tries.spent == 1


def test_delay_honours_retry_after_up_to_the_ceiling() -> None:
    policy = RetryPolicy(base_seconds=1.0, max_seconds=60.0)
    assert policy.delay(1, RateLimited("x", retry_after=7)) == 7
    assert policy.delay(1, RateLimited("x", retry_after=600)) == 60
    assert 4.0 <= policy.delay(4, ServerError("x")) <= 8.0  # 1 s doubled thrice, jittered
    assert 30.0 <= policy.delay(20, ServerError("x")) <= 60.0

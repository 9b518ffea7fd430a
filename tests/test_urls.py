"""redact_url: every password a --sink or --state URL can carry is hidden, nothing else."""

from __future__ import annotations

import pytest

from skyfill.urls import has_password, redact_url


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://user:s3cret@host:6380/2", "redis://user:***@host:6380/2"),
        ("rediss://:s3cret@host/0", "rediss://:***@host/0"),
        ("redis://user:@host/0", "redis://user:***@host/0"),
        ("redis://:p%40ss@[::1]:6379/0", "redis://:***@[::1]:6379/0"),
        ("redis://:p@ss@Host.Example/0", "redis://:***@Host.Example/0"),
        ("redis://host/0?password=s3cret&db=1", "redis://host/0?password=***&db=1"),
        ("postgresql://u:secret@h/db?password=x&a=b", "postgresql://u:***@h/db?password=***&a=b"),
        (
            "postgres://u@h/db?sslmode=require&pass%77ord=x",
            "postgres://u@h/db?sslmode=require&pass%77ord=***",
        ),
        ("ftp://u:pw@host/db", "ftp://u:***@host/db"),
        ("postgresql://u:pw@[bad/db", "[bad/db"),  # unparseable: only what follows the @
    ],
)
def test_a_password_is_hidden_wherever_it_is(url: str, shown: str) -> None:
    assert redact_url(url) == shown
    assert has_password(url)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "redis://user@host/0",
        "unix:///run/redis.sock?db=2",
        "postgresql://u@h/db?options=-c%20x&application_name=a+b&flag",
        "postgresql://u@h/db?password",  # an option without a value holds no secret
        "parquet",
        "sqlite:////tmp/x.db",
    ],
)
def test_a_url_without_a_password_is_left_as_it_is(url: str) -> None:
    assert redact_url(url) == url
    assert not has_password(url)

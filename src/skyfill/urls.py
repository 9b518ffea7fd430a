"""URLs that may carry a password (a --sink or --state URL), and how they are shown.

A password may sit in the userinfo (`scheme://user:secret@host/...`) or in a `password`
query option (`?password=secret`, which libpq and redis-py both accept). Wherever such a
URL reaches a message, a log line or a file, it goes through `redact_url` first.
"""

from __future__ import annotations

from urllib.parse import unquote_plus, urlsplit, urlunsplit

MASK = "***"
PASSWORD_OPTION = "password"


def redact_url(url: str) -> str:
    """`url` with every password in it replaced by `***`; a URL without one is returned
    as it is. One too malformed to parse keeps only what follows its last `@`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rpartition("@")[2]
    userinfo, at, hosts = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        userinfo = f"{userinfo.partition(':')[0]}:{MASK}"
    netloc = f"{userinfo}{at}{hosts}"
    query = "&".join(_redact_option(option) for option in parts.query.split("&"))
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


def has_password(url: str) -> bool:
    """Whether `url` carries a password (in its userinfo or its query)."""
    return redact_url(url) != url


def _redact_option(option: str) -> str:
    """One `key=value` of a query, its value masked if the key is `password`."""
    key, equals, _ = option.partition("=")
    if equals and unquote_plus(key) == PASSWORD_OPTION:
        return f"{key}={MASK}"
    return option
